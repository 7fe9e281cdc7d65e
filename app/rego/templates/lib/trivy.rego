# Reading a Trivy JSON report (ArtifactName, Results[].Vulnerabilities[]), shared by the trivy
# templates. Trivy's severities are CRITICAL, HIGH, MEDIUM, LOW and UNKNOWN.
package herald.lib.trivy

import data.herald.lib.text

severities := ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]

artifact := text.field(input, "ArtifactName", "unknown artifact")

artifact_type := text.field(input, "ArtifactType", "")

# every vulnerability with the target it was found in, in report order
findings := [{"target": text.field(r, "Target", "none"), "v": v} |
	r := input.Results[_]
	v := r.Vulnerabilities[_]
	is_object(v)
]

by_severity(severity) = [f | f := findings[_]; upper(text.field(f.v, "Severity", "UNKNOWN")) == severity]

count_of(severity) = count(by_severity(severity))
