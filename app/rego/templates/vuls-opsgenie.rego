# Aqua image-scan webhook as an OpsGenie alert body (description and alias). Postee's package
# and output: the result object is sent as compact JSON.
package postee.vuls.opsgenie

import data.herald.lib.aqua

title := aqua.image

result := {
	"description": sprintf("%s vulnerability scan report", [aqua.image]),
	"alias": aqua.image,
}
