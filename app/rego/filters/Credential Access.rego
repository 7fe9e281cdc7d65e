# Route filter: Tracee findings of the MITRE ATT&CK tactic "Credential Access": a signature ID in
# the set below (Tracee's original TRC-n numbering, as Postee listed them), or a finding whose own
# "MITRE ATT&CK" property names the tactic (newer Tracee signatures such as TRC-1010 are numbered
# differently). IDs are compared exactly; Postee matched substrings, so "TRC-1" also caught
# TRC-10 to TRC-14 and "TRC-10" caught TRC-1010.
package postee

# Edit: the signature IDs and tactics that trigger the route.
credential_access_signatures := {"TRC-8", "TRC-10"}

credential_access_tactics := {"Credential Access"}

allow {
	input.SigMetadata.ID == credential_access_signatures[_]
}

allow {
	tactic := input.SigMetadata.Properties["MITRE ATT&CK"]
	is_string(tactic)
	lower(tactic) == lower(credential_access_tactics[_])
}
