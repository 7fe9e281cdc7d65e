# Aqua image-scan webhook as a CycloneDX 1.1 XML BOM with the vulnerability extension 1.0 (for
# NexusIQ). Postee's package name, spelling included (templates.py also accepts "cyclonedx").
# Unlike Postee's: text is XML-escaped, licenses are names (not SPDX ids), severities and
# scoring methods use the extension's enumerations, each vulnerability references its
# component, and the serial number is derived from the image instead of being a constant.
package postee.vuls.cyclondx

import data.herald.lib.aqua
import data.herald.lib.text

title := aqua.image

esc(x) = replace(replace(replace(replace(replace(text.str(x), "&", "&amp;"), "<", "&lt;"), ">", "&gt;"), "\"", "&quot;"), "'", "&apos;")

# A stable urn:uuid from the image digest (or the image name), so a re-sent scan keeps its serial
# number; version nibble 5 and variant 8 as the schema's pattern requires.
serial_number := sprintf("urn:uuid:%s-%s-5%s-8%s-%s", [substring(h, 0, 8), substring(h, 8, 4), substring(h, 13, 3), substring(h, 17, 3), substring(h, 20, 12)]) {
	h := serial_hex
}

serial_hex := h {
	parts := split(lower(text.field(input, "digest", "")), ":")
	h := parts[count(parts) - 1]
	regex.match("^[0-9a-f]{32,}$", h)
} else = substring(concat("", [hex.encode(sprintf("%s/%s", [aqua.registry, aqua.image])), "00000000000000000000000000000000"]), 0, 32) {
	true
}

severity_names := {"critical": "Critical", "high": "High", "medium": "Medium", "low": "Low", "negligible": "None"}

severity(v) = s {
	s := severity_names[lower(text.field(v, "aqua_severity", ""))]
} else = "Unknown" {
	true
}

method(v) = "CVSSv2" {
	startswith(upper(text.field(v, "aqua_scoring_system", "")), "CVSS V2")
} else = "CVSSv3" {
	startswith(upper(text.field(v, "aqua_scoring_system", "")), "CVSS V3")
} else = "Other" {
	true
}

score(v) = sprintf("\n              <v:score>\n                <v:base>%s</v:base>\n              </v:score>", [text.str(v.aqua_score)]) {
	is_number(v.aqua_score)
} else = "" {
	true
}

# optional(indent, tag, v, key): <v:tag>v[key]</v:tag> on its own line, or nothing
optional(indent, tag, v, key) = sprintf("\n%s<v:%s>%s</v:%s>", [indent, tag, esc(v[key]), tag]) {
	text.field(v, key, "") != ""
} else = "" {
	true
}

source(v) = sprintf("\n          <v:source name=\"NVD\">\n            <v:url>%s</v:url>\n          </v:source>", [esc(v.nvd_url)]) {
	text.field(v, "nvd_url", "") != ""
} else = "" {
	true
}

recommendation(v) = sprintf("\n          <v:recommendations>\n            <v:recommendation>%s</v:recommendation>\n          </v:recommendations>", [esc(v.solution)]) {
	text.field(v, "solution", "") != ""
} else = "" {
	true
}

rating(v) = concat("", [
	"\n          <v:ratings>\n            <v:rating>",
	score(v),
	sprintf("\n              <v:severity>%s</v:severity>", [severity(v)]),
	sprintf("\n              <v:method>%s</v:method>", [method(v)]),
	optional("              ", "vector", v, "aqua_vectors"),
	"\n            </v:rating>\n          </v:ratings>",
])

vulnerability(ref, v) = concat("", [
	sprintf("\n        <v:vulnerability ref=\"%s\">", [esc(ref)]),
	sprintf("\n          <v:id>%s</v:id>", [esc(text.field(v, "name", "none"))]),
	source(v),
	rating(v),
	optional("          ", "description", v, "description"),
	recommendation(v),
	"\n        </v:vulnerability>",
])

license(res) = sprintf("\n      <licenses>\n        <license>\n          <name>%s</name>\n        </license>\n      </licenses>", [esc(res.license)]) {
	text.field(res, "license", "") != ""
} else = "" {
	true
}

vulnerabilities(ref, r) = "" {
	count([v | v := r.vulnerabilities[_]]) == 0
} else = sprintf("\n      <v:vulnerabilities>%s\n      </v:vulnerabilities>", [concat("", [vulnerability(ref, v) | v := r.vulnerabilities[_]])]) {
	true
}

component(r) = concat("", [
	sprintf("\n    <component type=\"library\" bom-ref=\"%s\">", [esc(ref)]),
	sprintf("\n      <name>%s</name>", [esc(name)]),
	sprintf("\n      <version>%s</version>", [esc(version)]),
	license(res),
	vulnerabilities(ref, r),
	"\n    </component>",
]) {
	res := object.get(r, "resource", {})
	name := text.field(res, "name", text.field(res, "path", "none"))
	version := text.field(res, "version", "none")
	ref := sprintf("%s@%s", [name, version])
}

result := concat("", [
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
	sprintf("<bom xmlns=\"http://cyclonedx.org/schema/bom/1.1\" xmlns:v=\"http://cyclonedx.org/schema/ext/vulnerability/1.0\" serialNumber=\"%s\" version=\"1\">\n", [serial_number]),
	"  <components>",
	concat("", [component(r) | r := aqua.resources[_]]),
	"\n  </components>\n</bom>\n",
])
