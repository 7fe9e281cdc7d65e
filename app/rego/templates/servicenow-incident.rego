# Aqua runtime incident as a ServiceNow incident. Postee's package and layout, written for
# Herald; the incident's `data` (JSON in a string) is decoded and shown key by key, where Postee
# split the string on commas and colons (breaking values that contain them) and dropped
# tracee_finding.
package postee.servicenow.incident

import data.herald.lib.html
import data.herald.lib.text

title := text.field(input, "name", "incident")

aggregation_pkg := "postee.vuls.html.aggregation"

severity := text.field(input, "severity_score", "unknown")

# the incident details: an object, or JSON text holding one
details := d {
	is_string(input.data)
	json.is_valid(input.data)
	d := json.unmarshal(input.data)
	is_object(d)
} else = input.data {
	is_object(input.data)
}

data_html := html.table([], [[html.esc(k), value_html(details[k])] | k := sort([key | some key; details[key] = _])[_]]) {
	count(details) > 0
} else = html.esc(input.data) {
	is_string(input.data)
	input.data != ""
} else = "data not found" {
	true
}

# nested values (e.g. tracee_finding) are shown as indented JSON
value_html(v) = html.esc(v) {
	not is_object(v)
	not is_array(v)
} else = sprintf("<pre>%s</pre>", [html.esc(jsonformat(v))]) {
	true
}

result := concat("", [
	html.p(sprintf("<b>Name:</b> %s", [html.esc(text.field(input, "name", "name not found"))])),
	html.p(sprintf("<b>Category:</b> %s", [html.esc(text.field(input, "category", "category not found"))])),
	html.p(sprintf("<b>Severity:</b> %s", [html.esc(severity)])),
	data_section,
	html.p(sprintf("<b>Response policy name:</b> %s", [html.esc(text.field(input, "response_policy_name", "response policy name not found"))])),
	html.p(sprintf("<b>Response policy application scopes:</b> %s", [html.esc(scopes)])),
])

# a table goes after the "Data:" paragraph, a short text inside it
data_section := concat("", [html.p("<b>Data:</b>"), data_html]) {
	count(details) > 0
} else = html.p(sprintf("<b>Data:</b> %s", [data_html])) {
	true
}

scopes := s {
	s := text.list(input.application_scope)
	s != ""
} else = "none" {
	true
}

result_date := input.time

result_category := "Security incident"

result_severity := input.severity_score

result_summary := sprintf("Category: %s\nSeverity: %s", [text.field(input, "category", "category not found"), severity])

result_assigned_to := only(object.get(input, "application_scope_owners", []))

result_assigned_group := only(object.get(input, "application_scope", []))

only(xs) = text.str(xs[0]) {
	is_array(xs)
	count(xs) == 1
} else = "" {
	true
}
