# Route filter: the image-scan checks of the other policy files in one place, ANDed. Postee
# shipped this file with an empty `allow` body (which does not compile); here `allow` requires
# every check named in `related_features_enabled`. The shipped choice, "image_scan", only
# requires the event to be an Aqua image scan.
package postee

# Edit: the checks to AND together, from:
#   "image_scan"       the event is an Aqua image scan (has an image name)
#   "image_name"       the image name contains one of related_permitted_images
#   "not_ignored_image" the image name contains none of related_ignored_images
#   "registry"         the registry contains one of related_permitted_registries
#   "not_ignored_registry" the registry contains none of related_ignored_registries
#   "min_vulnerability" a vulnerability of related_min_severity or worse was found
#   "fix_available"    some vulnerability has a fix version
related_features_enabled := {"image_scan"}

related_permitted_images := {"ubuntu", "busybox"}

related_ignored_images := {"alpine", "postgres"}

related_permitted_registries := {"Aqua"}

related_ignored_registries := {"Aqua"}

related_min_severity := "low"

related_levels := {"negligible": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

related_check("image_scan") {
	is_string(input.image)
}

related_check("image_name") {
	is_string(input.image)
	contains(input.image, related_permitted_images[_])
}

related_check("not_ignored_image") {
	is_string(input.image)
	not related_image_ignored
}

related_check("registry") {
	is_string(input.registry)
	contains(input.registry, related_permitted_registries[_])
}

related_check("not_ignored_registry") {
	is_string(input.registry)
	not related_registry_ignored
}

related_check("min_vulnerability") {
	some severity
	related_levels[severity] >= related_levels[related_min_severity]
	found := input.vulnerability_summary[severity]
	is_number(found)
	found > 0
}

related_check("fix_available") {
	fix := input.resources[_].vulnerabilities[_].fix_version
	is_string(fix)
	fix != ""
}

related_image_ignored {
	is_string(input.image)
	contains(input.image, related_ignored_images[_])
}

related_registry_ignored {
	is_string(input.registry)
	contains(input.registry, related_ignored_registries[_])
}

# an unknown check name never passes, so a typo closes the route rather than opening it
related_failed_checks := {name | name := related_features_enabled[_]; not related_check(name)}

allow {
	count(related_features_enabled) > 0
	count(related_failed_checks) == 0
}
