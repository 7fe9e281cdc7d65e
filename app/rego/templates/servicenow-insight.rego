# Aqua insight as a ServiceNow incident. Postee's package and layout, written for Herald: the
# recommendation section shows the evidence's *_remediation texts (Postee printed a TODO) and
# the resource's extra info is listed key by key.
package postee.servicenow.insight

import data.herald.lib.html
import data.herald.lib.text

insight := object.get(input, "insight", {})

resource := object.get(input, "resource", {})

evidence := object.get(input, "evidence", {})

title := text.field(insight, "description", "Aqua insight")

aggregation_pkg := "postee.vuls.html.aggregation"

priorities := {0: "negligible", 1: "low", 2: "medium", 3: "high", 4: "critical"}

priority_text := p {
	p := priorities[insight.priority]
} else = "unknown" {
	true
}

aqua_server := s {
	s := object.get(input, ["postee", "AquaServer"], "")
	is_string(s)
} else = "" {
	true
}

console := trim_suffix(aqua_server, "/#/images/")

url := "" {
	console == ""
} else = sprintf("%s/ah/#/insights/%s/resource/%s", [console, urlquery.encode(text.field(insight, "id", "")), urlquery.encode(text.field(resource, "id", ""))]) {
	true
}

url_text := "" {
	console == ""
} else = sprintf("%s/ah/#/insights/%s/resource/%s", [console, text.field(insight, "id", ""), text.field(resource, "id", "")]) {
	true
}

url_html := "" {
	url == ""
} else = html.link(url, url_text) {
	true
}

detail(label, value) = html.p(sprintf("<b>%s:</b> %s", [label, value]))

steps := concat(", ", [sprintf("%s: %s", [k, text.str(resource.steps[k])]) | k := sort([key | some key; resource.steps[key] = _])[_]])

vulnerabilities := [[html.esc(text.field(v, "name", "none")), html.esc(text.field(v, "severity", "none")), html.esc(text.field(v, "package_name", "none")), html.esc(text.field(v, "current_version", "none")), html.esc(text.field(v, "fix_version", "none"))] | v := evidence.vulnerabilities[_]]

vulnerabilities_html := "" {
	count(vulnerabilities) == 0
} else = concat("", [html.p("Vulnerabilities"), html.table(["Vulnerability ID", "Severity", "Resource name", "Installed version", "Fix version"], vulnerabilities)]) {
	true
}

sensitive_data := [[html.esc(text.field(s, "file_type", "none")), html.esc(text.field(s, "file_path", "none")), html.esc(text.field(s, "image", "none"))] | s := evidence.sensitive_data[_]]

sensitive_data_html := "" {
	count(sensitive_data) == 0
} else = concat("", [html.p("Sensitive data"), html.table(["File Type", "File Path", "Image"], sensitive_data)]) {
	true
}

remediations := [html.p(html.esc(evidence[k])) | k := sort([key | some key; evidence[key] = _; endswith(key, "_remediation")])[_]; is_string(evidence[k]); evidence[k] != ""]

recommendation := concat("", remediations) {
	count(remediations) > 0
} else = html.p("No recommendation provided") {
	true
}

scopes := s {
	s := text.list(input.application_scope)
	s != ""
} else = "none" {
	true
}

result := concat("", [
	html.h(2, "Insight Details"),
	detail("Insight ID", html.esc(text.field(insight, "id", "none"))),
	detail("Description", html.esc(text.field(insight, "description", "none"))),
	detail("Impact", html.esc(text.field(insight, "impact", "none"))),
	detail("Severity", priority_text),
	detail("Found Date", html.esc(text.field(resource, "found_date", "none"))),
	detail("Last Scan", html.esc(text.field(resource, "last_scanned", "none"))),
	detail("URL", url_html),
	html.h(2, "Resource Details"),
	detail("Resource ID", html.esc(text.field(resource, "id", "none"))),
	detail("Resource Name", html.esc(text.field(resource, "name", "none"))),
	detail("ARN", html.esc(text.field(resource, "arn", "none"))),
	detail("Extra Info", html.esc(steps)),
	html.h(2, "Evidence"),
	vulnerabilities_html,
	sensitive_data_html,
	html.h(2, "Recommendation"),
	recommendation,
	detail("Response policy name", html.esc(text.field(input, "response_policy_name", "none"))),
	detail("Response policy application scopes", html.esc(scopes)),
])

result_category := "Security insight"

result_severity := insight.priority

result_summary := concat("\n", [
	sprintf("Insight ID: %s", [text.field(insight, "id", "none")]),
	sprintf("Description: %s", [text.field(insight, "description", "none")]),
	sprintf("Impact: %s", [text.field(insight, "impact", "none")]),
	sprintf("Severity: %s", [priority_text]),
	sprintf("Found Date: %s", [text.field(resource, "found_date", "none")]),
	sprintf("Last Scan: %s", [text.field(resource, "last_scanned", "none")]),
	sprintf("URL: %s", [url_text]),
])

result_assigned_to := only(object.get(input, "application_scope_owners", []))

result_assigned_group := only(object.get(input, "application_scope", []))

only(xs) = text.str(xs[0]) {
	is_array(xs)
	count(xs) == 1
} else = "" {
	true
}
