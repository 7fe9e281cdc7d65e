# Trivy JSON report as Slack blocks: artifact, vulnerabilities per severity (ids link to the
# advisory) and a count summary. Postee's package and layout, written for Herald: Trivy's
# UNKNOWN severity is shown (Postee looked for NEGLIGIBLE, which Trivy never reports), column
# headers are included, and the aggregation package works.
package postee.vuls.trivy.slack

import data.herald.lib.slack
import data.herald.lib.text
import data.herald.lib.trivy

title := "Vulnerability scan report"

aggregation_pkg := "postee.vuls.slack.trivy.aggregation"

header := [slack.section(slack.esc(line)) | line := [sprintf("Artifact name: %s", [trivy.artifact]), sprintf("Type: %s", [trivy.artifact_type])][_]; line != "Type: "]

found := [] {
	count(trivy.findings) == 0
} else = array.concat([slack.section("*Found vulnerabilities*")], [block | s := trivy.severities[_]; block := severity_sections(s)[_]]) {
	true
}

severity_sections(severity) = slack.table(
	sprintf("*%s severity vulnerabilities*", [text.capitalised(severity)]),
	["*Vulnerability ID*", "*Resource name / Installed version / Fix version*"],
	[row(f.v) | f := trivy.by_severity(severity)[_]],
)

row(v) = [
	slack.link(text.field(v, "PrimaryURL", ""), text.field(v, "VulnerabilityID", "none")),
	slack.esc(concat(" / ", [text.field(v, "PkgName", "none"), text.field(v, "InstalledVersion", "none"), text.field(v, "FixedVersion", "none")])),
]

totals := [{"type": "section", "fields": [slack.mrkdwn(cell) | s := trivy.severities[_]; cell := [text.capitalised(s), sprintf("*%d*", [trivy.count_of(s)])][_]]}]

result := array.concat(array.concat(header, found), totals)
