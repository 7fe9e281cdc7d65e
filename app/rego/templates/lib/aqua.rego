# Reading an Aqua image-scan webhook (shared by the vuls.* and servicenow templates). Every
# lookup tolerates missing or mistyped properties, so one odd event renders with "none" fills
# instead of failing.
package herald.lib.aqua

import data.herald.lib.text

severities := ["critical", "high", "medium", "low", "negligible"]

colors := {"critical": "#c00000", "high": "#e0443d", "medium": "#f79421", "low": "#e1c930", "negligible": "green"}

image := text.field(input, "image", "")

registry := text.field(input, "registry", "")

# The console link: <AquaServer><registry>/<image>, query-escaped for the href.
aqua_server := s {
	s := object.get(input, ["postee", "AquaServer"], "")
	is_string(s)
} else = "" {
	true
}

href := sprintf("%s%s/%s", [aqua_server, urlquery.encode(registry), urlquery.encode(image)])

href_text := sprintf("%s%s/%s", [aqua_server, registry, image])

url := href {
	aqua_server != ""
} else = "" {
	true
}

disallowed {
	object.get(input, ["image_assurance_results", "disallowed"], false) == true
}

compliance := "Image is non-compliant" {
	disallowed
} else = "Image is compliant" {
	true
}

summary_count(severity) = n {
	n := object.get(input, ["vulnerability_summary", severity], 0)
	is_number(n)
} else = 0 {
	true
}

# Shown only when that scan was enabled, like Postee's legacy renderer (Postee's Rego templates
# said "Yes" whenever the scan was merely enabled).
malware_line := sprintf("Malware found: %s", [malware_answer]) {
	object.get(input, ["scan_options", "scan_malware"], false) == true
} else = "" {
	true
}

sensitive_line := sprintf("Sensitive data found: %s", [sensitive_answer]) {
	object.get(input, ["scan_options", "scan_sensitive_data"], false) == true
} else = "" {
	true
}

malware_answer := "Yes" {
	summary_count("malware") > 0
} else = "Yes" {
	count(malware) > 0
} else = "No" {
	true
}

sensitive_answer := "Yes" {
	summary_count("sensitive") > 0
} else = "Yes" {
	count(sensitive_data) > 0
} else = "No" {
	true
}

# the scan lines in Postee's order: compliance, then malware and sensitive data when scanned
status_lines := [l | l := [compliance, malware_line, sensitive_line][_]; l != ""]

resources := [r | r := input.resources[_]; is_object(r)]

# [id, resource name, installed version, fix version] for one lower-case severity
vulnerabilities(severity) = [[text.field(v, "name", "none"), text.field(res, "name", "none"), text.field(res, "version", "none"), fix_version(v)] |
	r := resources[_]
	res := object.get(r, "resource", {})
	v := r.vulnerabilities[_]
	lower(text.field(v, "aqua_severity", "")) == severity
]

fix_version(v) = s {
	s := text.controls(text.field(v, "fix_version", ""))
	s != ""
} else = "none" {
	true
}

# checks_performed as [number, control, policy name, PASS|FAIL]
assurance_checks := [[text.str(i + 1), text.field(c, "control", "none"), text.field(c, "policy_name", "none"), pass_fail(c)] |
	c := input.image_assurance_results.checks_performed[i]
]

pass_fail(c) = "FAIL" {
	object.get(c, "failed", false) == true
} else = "PASS" {
	true
}

malware := [[text.field(m, "malware", "none"), text.field(m, "hash", "none"), text.field(m, "path", "none")] | m := input.malware[_]]

sensitive_data := [[text.field(s, "filename", "none"), text.field(s, "path", "none"), text.field(s, "type", "none"), text.field(s, "hash", "none")] | s := input.sensitive_data[_]]
