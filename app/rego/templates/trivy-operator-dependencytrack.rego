# Trivy Operator SbomReport for Dependency-Track: the CycloneDX components object as-is (sent as
# compact JSON), titled <repository>:<tag>. Postee's package and output.
package postee.trivyoperator.dependencytrack

import data.herald.lib.trivyoperator as report

title := report.image

result := input.report.components
