# Trivy JSON report as a Jira issue description (wiki markup): a summary and one table per
# severity. Postee's package and layout, written for Herald; it aggregates with Jira markup
# (postee.trivy.jira.aggregation) where Postee pointed at a Slack aggregation package.
package postee.trivy.jira

import data.herald.lib.jira
import data.herald.lib.text
import data.herald.lib.trivy

title := sprintf("%s vulnerability scan report", [trivy.artifact])

aggregation_pkg := "postee.trivy.jira.aggregation"

colors := {"CRITICAL": "#c00000", "HIGH": "#e0443d", "MEDIUM": "#f79421", "LOW": "#e1c930", "UNKNOWN": "#505f79"}

type_line := "" {
	trivy.artifact_type == ""
} else = sprintf("Type: %s\n", [jira.esc(trivy.artifact_type)]) {
	true
}

summary := concat("", [
	"\nh4. Summary totals:\n",
	jira.table(
		[text.capitalised(s) | s := trivy.severities[_]],
		[[jira.colored(colors[s], text.str(trivy.count_of(s))) | s := trivy.severities[_]]],
	),
])

headers := ["Target", "Title", "Vulnerability ID", "Resource name", "Path", "Installed version", "Fix version", "Url"]

severity_table(severity) = "" {
	count(trivy.by_severity(severity)) == 0
} else = concat("", [
	sprintf("\nh4. %s severity vulnerabilities\n", [text.capitalised(severity)]),
	jira.table(headers, [row(f) | f := trivy.by_severity(severity)[_]]),
]) {
	true
}

row(f) = array.concat([jira.esc(f.target)], [jira.esc(text.field(f.v, key, "none")) | key := row_keys[_]])

row_keys := ["Title", "VulnerabilityID", "PkgName", "PkgPath", "InstalledVersion", "FixedVersion", "PrimaryURL"]

result := concat("", array.concat(
	[sprintf("h1. Artifact name: %s\n", [jira.esc(trivy.artifact)]), type_line, summary],
	[severity_table(s) | s := trivy.severities[_]],
))
