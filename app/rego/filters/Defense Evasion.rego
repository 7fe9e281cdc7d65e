# Route filter: Tracee findings of the MITRE ATT&CK tactic "Defense Evasion": a signature ID in
# the set below (Tracee's original TRC-n numbering, as Postee listed them), or a finding whose own
# "MITRE ATT&CK" property names the tactic (newer Tracee signatures such as TRC-1010 are numbered
# differently). IDs are compared exactly; Postee matched substrings, so "TRC-1" also caught
# TRC-10 to TRC-14 and "TRC-10" caught TRC-1010.
package postee

# Edit: the signature IDs and tactics that trigger the route.
defense_evasion_signatures := {"TRC-2", "TRC-3", "TRC-4", "TRC-5", "TRC-9"}

defense_evasion_tactics := {"Defense Evasion"}

allow {
	input.SigMetadata.ID == defense_evasion_signatures[_]
}

allow {
	tactic := input.SigMetadata.Properties["MITRE ATT&CK"]
	is_string(tactic)
	lower(tactic) == lower(defense_evasion_tactics[_])
}
