# Reading a Falco alert (Falco's JSON output / Falcosidekick's payload), shared by herald.falco.*.
package herald.lib.falco

import data.herald.lib.text

rule := text.field(input, "rule", "unknown rule")

priority := text.field(input, "priority", "unknown")

title := sprintf("Falco %s: %s", [priority, rule])

# [label, value] lines in display order; missing properties are left out
lines := [pair | pair := [
	["Rule", rule],
	["Priority", priority],
	["Output", text.field(input, "output", "")],
	["Time", text.field(input, "time", "")],
	["Host", text.field(input, "hostname", "")],
	["Source", text.field(input, "source", "")],
	["Tags", tags],
][_]; pair[1] != ""]

tags := text.list(input.tags) {
	is_array(input.tags)
} else = "" {
	true
}

fields := f {
	f := input.output_fields
	is_object(f)
} else = {} {
	true
}

# output_fields as [name, value] rows, by name
field_rows := [[k, text.list(fields[k])] | k := sort([key | some key; fields[key] = _])[_]]
