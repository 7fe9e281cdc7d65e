# Route filter: Aqua image scans from a registry whose name contains one of these names.
package postee

# Edit: the registry names (substrings) that trigger the route.
allowed_registries := {"Aqua"}

allow {
	is_string(input.registry)
	contains(input.registry, allowed_registries[_])
}
