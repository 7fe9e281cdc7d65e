# Route filter: Tracee findings of the MITRE ATT&CK tactic "Initial Access": a signature ID in
# the set below (Tracee's original TRC-n numbering, as Postee listed them), or a finding whose own
# "MITRE ATT&CK" property names the tactic (newer Tracee signatures such as TRC-1010 are numbered
# differently). IDs are compared exactly; Postee matched substrings, so "TRC-1" also caught
# TRC-10 to TRC-14 and "TRC-10" caught TRC-1010.
package postee

# Edit: the signature IDs and tactics that trigger the route.
initial_access_signatures := {"TRC-12"}

initial_access_tactics := {"Initial Access"}

allow {
	input.SigMetadata.ID == initial_access_signatures[_]
}

allow {
	tactic := input.SigMetadata.Properties["MITRE ATT&CK"]
	is_string(tactic)
	lower(tactic) == lower(initial_access_tactics[_])
}
