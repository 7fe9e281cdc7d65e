# Route filter: Aqua image scans with at least one vulnerability that has a fix version.
package postee

allow {
	fix := input.resources[_].vulnerabilities[_].fix_version
	is_string(fix)
	fix != ""
}
