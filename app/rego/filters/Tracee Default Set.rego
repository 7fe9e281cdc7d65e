# Route filter: findings of Tracee's built-in signatures: an ID in the set below (the default set
# Postee listed) or, with tracee_default_any_builtin, any ID of Tracee's own "TRC-<number>"
# form (newer Tracee numbers its signatures differently, e.g. TRC-1010). Postee's version used
# one name for a set, a default and a rule, and referred to itself; this one does not.
package postee

# Edit: the signature IDs that trigger the route ...
tracee_default_signatures := {
	"TRC-1", "TRC-2", "TRC-3", "TRC-4", "TRC-5", "TRC-6", "TRC-7",
	"TRC-8", "TRC-9", "TRC-10", "TRC-11", "TRC-12", "TRC-13", "TRC-14",
}

# ... and whether every other built-in signature (TRC-<number>) does too.
tracee_default_any_builtin := true

allow {
	input.SigMetadata.ID == tracee_default_signatures[_]
}

allow {
	tracee_default_any_builtin == true
	id := input.SigMetadata.ID
	is_string(id)
	regex.match("^TRC-[0-9]+$", id)
}
