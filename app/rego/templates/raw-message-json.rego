# Any JSON event, pretty-printed (1-space indent, sorted keys) like Postee's raw-json template.
package postee.rawmessage.json

title := "-"

result := jsonformat(input)
