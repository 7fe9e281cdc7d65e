# Route filter: Tracee findings of the MITRE ATT&CK tactic "Privilege Escalation": a signature ID in
# the set below (Tracee's original TRC-n numbering, as Postee listed them), or a finding whose own
# "MITRE ATT&CK" property names the tactic (newer Tracee signatures such as TRC-1010 are numbered
# differently). IDs are compared exactly; Postee matched substrings, so "TRC-1" also caught
# TRC-10 to TRC-14 and "TRC-10" caught TRC-1010.
package postee

# Edit: the signature IDs and tactics that trigger the route.
privilege_escalation_signatures := {"TRC-11", "TRC-14"}

privilege_escalation_tactics := {"Privilege Escalation"}

allow {
	input.SigMetadata.ID == privilege_escalation_signatures[_]
}

allow {
	tactic := input.SigMetadata.Properties["MITRE ATT&CK"]
	is_string(tactic)
	lower(tactic) == lower(privilege_escalation_tactics[_])
}
