# Reading a Tracee finding (SigMetadata + Context), shared by the tracee.* templates.
package herald.lib.tracee

import data.herald.lib.text

metadata := object.get(input, "SigMetadata", {})

properties := object.get(metadata, "Properties", {})

context := object.get(input, "Context", {})

title := sprintf("Tracee Detection - %s", [text.field(metadata, "Name", "unknown signature")])

mitre := sprintf("%s (%s)", [technique, category]) {
	technique := text.field(properties, "MITRE ATT&CK", "")
	technique != ""
	category := text.field(properties, "Category", "")
	category != ""
} else = text.field(properties, "MITRE ATT&CK", text.field(properties, "Category", "none")) {
	true
}

# [label, value] pairs in display order; the workload lines only when Tracee reports them
lines := array.concat([
	["Rule Description", text.field(metadata, "Description", "none")],
	["Detection", text.field(context, "processName", "none")],
	["MITRE Details", mitre],
	["Severity", text.field(properties, "Severity", "unknown")],
], [pair | pair := workload[_]; pair[1] != ""])

workload := [
	["Signature ID", text.field(metadata, "ID", "")],
	["Host", text.field(context, "hostName", "")],
	["Container image", text.field(context, "containerImage", "")],
	["Pod", text.field(context, "podName", "")],
	["Namespace", text.field(context, "podNamespace", "")],
]
