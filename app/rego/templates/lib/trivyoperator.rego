# Reading a Trivy Operator report (VulnerabilityReport or SbomReport), shared by the
# trivyoperator.* templates.
package herald.lib.trivyoperator

import data.herald.lib.text

severities := ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]

artifact := object.get(input, ["report", "artifact"], {})

image := sprintf("%s:%s", [text.field(artifact, "repository", "unknown"), text.field(artifact, "tag", "unknown")])

namespace := text.field(object.get(input, "metadata", {}), "namespace", "unknown")

headline := sprintf("Vulnerability issue with image %s in namespace %s", [image, namespace])

# report.summary.<severity>Count, 0 when missing
summary_count(severity) = n {
	n := input.report.summary[sprintf("%sCount", [lower(severity)])]
	is_number(n)
} else = 0 {
	true
}

vulnerabilities(severity) = [v | v := input.report.vulnerabilities[_]; is_object(v); upper(text.field(v, "severity", "UNKNOWN")) == severity]
