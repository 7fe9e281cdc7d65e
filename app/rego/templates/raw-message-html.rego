# Any JSON event as pretty-printed JSON inside <pre><code>.
package postee.rawmessage.html

title := "Raw Message Received"

result := sprintf("<pre><code>%s</code></pre>", [jsonformat(input)])
