# Route filter: every event except Aqua image scans from a registry whose name contains one of
# these names (an event without a registry passes, as in Postee).
package postee

# Edit: the registry names (substrings) that never trigger the route.
ignored_registries := {"Aqua"}

ignored_registry {
	is_string(input.registry)
	contains(input.registry, ignored_registries[_])
}

allow {
	not ignored_registry
}
