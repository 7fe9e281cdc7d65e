"""The timeline as one self-contained HTML file: inline CSS and JS, no network (a CSP forbids it).

One lane per entity on a shared time axis; each event is a dot coloured by severity (a ring marks
one with a dead letter). Clicking a dot shows the event's details, its JSON, and what Herald did
with it (routes and why, delivery attempts, dead letters). Dragging on the axis zooms in.

Rows are streamed: dots are written as the (sorted) rows arrive, each row's JSON goes to a spool
file appended at the end as one JSON Lines block that the page parses lazily, on first click.
All event text is escaped on the way out and put into the page with ``textContent`` only, since
events are attacker-influenced data.
"""

from __future__ import annotations

import html
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from app.forensics.eventtime import format_ns

_CSS = """
:root{--c-critical:#b91c1c;--c-high:#ea580c;--c-medium:#ca8a04;--c-low:#2563eb;--c-info:#6b7280;--c-unknown:#a3a3a3}
*{box-sizing:border-box}body{margin:0;font:13px/1.4 system-ui,sans-serif;color:#111;background:#fafafa}
header{padding:10px 16px;border-bottom:1px solid #ddd;background:#fff}h1{font-size:18px;margin:0 0 4px}
.meta{color:#555;margin:2px 0}.meta code{background:#f1f1f1;padding:0 3px}
.legend span{display:inline-flex;align-items:center;margin-right:12px}
.legend i{width:10px;height:10px;border-radius:50%;display:inline-block;margin-right:4px}
.controls{margin-top:6px}.hint{color:#777;margin-left:8px}
main{padding:0 16px 16px}.row{display:flex;align-items:stretch}
.label{width:220px;flex:none;padding:4px 8px 4px 0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-weight:600}
.label .count{display:block;font-weight:400;color:#777;font-size:11px}
#axis{position:relative;height:28px;flex:1;border-bottom:1px solid #999;cursor:crosshair;user-select:none;background:#fff}
#axis .tick{position:absolute;top:0;height:100%;border-left:1px solid #ccc;padding-left:3px;font-size:11px;color:#444;white-space:nowrap}
#brush{position:absolute;top:0;height:100%;background:rgba(37,99,235,.2);display:none}
.lane{border-bottom:1px solid #e5e5e5}.track{position:relative;flex:1;min-height:18px;background:#fff}
.ev{position:absolute;width:10px;height:10px;border-radius:50%;cursor:pointer;background:var(--c-unknown);border:1px solid rgba(0,0,0,.25)}
.ev:hover{transform:scale(1.4);z-index:2}.ev.sel{outline:2px solid #000;z-index:3}
.ev.dl{box-shadow:0 0 0 2px #fff,0 0 0 4px #000}
.s-critical{background:var(--c-critical)}.s-high{background:var(--c-high)}.s-medium{background:var(--c-medium)}
.s-low{background:var(--c-low)}.s-info{background:var(--c-info)}.s-unknown{background:var(--c-unknown)}
body.open main,body.open header{margin-right:min(640px,50vw)}
#details{position:fixed;right:0;top:0;bottom:0;width:min(640px,50vw);background:#fff;border-left:2px solid #999;
overflow:auto;padding:12px 16px;box-shadow:-4px 0 12px rgba(0,0,0,.1)}
#details h2{font-size:16px;margin:0 28px 8px 0}#details h3{font-size:14px;margin:14px 0 4px}
#close{position:absolute;right:10px;top:8px;border:0;background:none;font-size:20px;cursor:pointer}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:0}dt{color:#555}dd{margin:0;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:12px}td,th{border:1px solid #ddd;padding:2px 5px;text-align:left;vertical-align:top}
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}
pre{background:#f5f5f5;padding:8px;overflow:auto;font-size:12px;max-height:50vh}
"""

_JS = r"""
(function(){
'use strict';
var MAXROWS=16,ROWH=13;
var rowsText=document.getElementById('rows').textContent,rowLines=null;
function row(k){if(!rowLines){rowLines=rowsText.split('\n');}return JSON.parse(rowLines[k]);}
var lanes=Array.prototype.slice.call(document.querySelectorAll('.lane'));
var dots=document.querySelectorAll('.ev'),t0=Infinity,t1=-Infinity;
for(var i=0;i<dots.length;i++){var t=+dots[i].dataset.t;if(t<t0)t0=t;if(t>t1)t1=t;}
if(!dots.length){t0=0;t1=1;}
var view=[t0,t1];
function fmt(t,span){var s=new Date(t).toISOString().replace('T',' ').replace('Z','');
 if(span>2*86400e3)return s.slice(0,16);if(span>60e3)return s.slice(11,19);return s.slice(11,23);}
function drawAxis(){var axis=document.getElementById('axis'),span=view[1]-view[0];
 Array.prototype.slice.call(axis.querySelectorAll('.tick')).forEach(function(n){n.remove();});
 for(var i=0;i<5;i++){var d=document.createElement('div');d.className='tick';d.style.left=(i*20)+'%';
  d.textContent=fmt(view[0]+span*i/5,span);axis.appendChild(d);}
 document.getElementById('range').textContent=fmt(view[0],1e12)+' \u2192 '+fmt(view[1],1e12)+' UTC';}
function layout(){var span=Math.max(view[1]-view[0],1);
 lanes.forEach(function(lane){var track=lane.querySelector('.track'),w=track.clientWidth||800;
  var pct=12/w*100,ends=[],shown=0,evs=track.querySelectorAll('.ev');
  for(var i=0;i<evs.length;i++){var d=evs[i],t=+d.dataset.t;
   if(t<view[0]||t>view[1]){d.style.display='none';continue;}
   d.style.display='';shown++;var x=(t-view[0])/span*(100-pct),r=-1;
   for(var j=0;j<ends.length;j++){if(ends[j]<=x){r=j;break;}}
   if(r<0){if(ends.length<MAXROWS){r=ends.length;ends.push(0);}else{r=0;for(j=1;j<ends.length;j++){if(ends[j]<ends[r])r=j;}}}
   ends[r]=x+pct;d.style.left=x+'%';d.style.top=(r*ROWH+4)+'px';}
  track.style.height=(Math.max(1,ends.length)*ROWH+8)+'px';
  lane.querySelector('.count').textContent=(shown===evs.length?shown:shown+' of '+evs.length)+' event(s)';});
 drawAxis();}
function el(tag,text,cls){var n=document.createElement(tag);if(text!==undefined&&text!==null)n.textContent=String(text);if(cls)n.className=cls;return n;}
function table(head,rows){var t=el('table'),tr=el('tr');head.forEach(function(h){tr.appendChild(el('th',h));});t.appendChild(tr);
 rows.forEach(function(r){var tr=el('tr');r.forEach(function(c){var td=el('td');if(c&&c.nodeType)td.appendChild(c);else td.textContent=c===null||c===undefined?'':String(c);tr.appendChild(td);});t.appendChild(tr);});return t;}
function verdict(ok,yes,no){return el('span',ok?yes:no,ok?'ok':'bad');}
function outcome(o){return el('span',o,o==='delivered'?'ok':o==='failed'?'bad':'');}
var KNOWN={event_id:1,routes:1,actions:1,failures:1,time:1,topic:1,partition:1,offset:1,received_at:1};
function showHerald(box,h){box.textContent='';box.appendChild(el('h3','What Herald did'));
 if(!h){box.appendChild(el('p','Run the timeline with --with-decisions to join decisions, deliveries and dead letters.'));return;}
 var d=h.decision;
 if(!d){box.appendChild(el('p','No decision record: the router has not processed this event (or it was dead-lettered before routing).'));}
 else{var names=Object.keys(d.routes||{}),tpl=names.some(function(n){return (d.routes[n]||{}).template;});
  var routes=names.map(function(n){var v=d.routes[n]||{},r=[n,verdict(v.matched,'matched','not matched'),v.reason||''];if(tpl)r.push(v.template||'');return r;});
  box.appendChild(el('h4','Routes'));box.appendChild(table(tpl?['route','verdict','why','template']:['route','verdict','why'],routes));
  var acts=(d.actions||[]).map(function(a){return [a.route,a.action];});
  box.appendChild(el('h4','Actions chosen'));box.appendChild(acts.length?table(['route','action'],acts):el('p','none'));
  var extra=Object.keys(d).filter(function(k){return !KNOWN[k];});
  if(extra.length||(d.failures||[]).length){var dl=el('dl');extra.forEach(function(k){dl.appendChild(el('dt',k));dl.appendChild(el('dd',typeof d[k]==='object'?JSON.stringify(d[k]):d[k]));});
   (d.failures||[]).forEach(function(f){dl.appendChild(el('dt','failure '+f.route));dl.appendChild(el('dd',f.error_type+': '+f.error));});box.appendChild(dl);}}
 var dv=(h.deliveries||[]).map(function(x){return [x.action,x.route,x.attempt,outcome(x.outcome),x.status,x.error||'',x.latency_ms];});
 box.appendChild(el('h4','Delivery attempts'));box.appendChild(dv.length?table(['action','route','attempt','outcome','status','error','ms'],dv):el('p','none'));
 var dl2=(h.dead_letters||[]).map(function(x){return [x.stage,x.error_type,x.status,x.attempts,x.error,x.topic];});
 var hd=el('h4','Dead letters');box.appendChild(hd);
 box.appendChild(dl2.length?table(['stage','type','status','attempts','error','topic'],dl2):el('p','none'));}
function show(dot){var prev=document.querySelector('.ev.sel');if(prev)prev.classList.remove('sel');dot.classList.add('sel');
 var r=row(+dot.dataset.k),box=document.getElementById('details');box.hidden=false;
 document.getElementById('detail-title').textContent=r.title||r.source||r.event_id;
 var meta=document.getElementById('detail-meta');meta.textContent='';
 [['entity',r.entity],['event id',r.event_id],['event time',r.event_time+' ('+r.event_time_from+')'],['Kafka time',r.kafka_time],
  ['source',r.source],['severity',r.severity],['record',r.topic+' ['+r.partition+'] @'+r.offset]].forEach(function(p){meta.appendChild(el('dt',p[0]));meta.appendChild(el('dd',p[1]));});
 showHerald(document.getElementById('detail-herald'),r.herald);
 document.getElementById('detail-json').textContent=r.event_text;
 if(!document.body.classList.contains('open')){document.body.classList.add('open');layout();}}
document.getElementById('lanes').addEventListener('click',function(e){if(e.target.classList.contains('ev'))show(e.target);});
document.getElementById('close').addEventListener('click',function(){document.getElementById('details').hidden=true;
 document.body.classList.remove('open');layout();});
document.getElementById('reset').addEventListener('click',function(){view=[t0,t1];layout();});
var axis=document.getElementById('axis'),brush=document.getElementById('brush'),x0=null;
function ax(e){var b=axis.getBoundingClientRect();return Math.min(Math.max(e.clientX-b.left,0),b.width);}
axis.addEventListener('mousedown',function(e){x0=ax(e);brush.style.left=x0+'px';brush.style.width='0';brush.style.display='block';});
window.addEventListener('mousemove',function(e){if(x0===null)return;var x=ax(e);brush.style.left=Math.min(x,x0)+'px';brush.style.width=Math.abs(x-x0)+'px';});
window.addEventListener('mouseup',function(e){if(x0===null)return;var x=ax(e),w=axis.getBoundingClientRect().width,a=Math.min(x,x0),b=Math.max(x,x0);
 x0=null;brush.style.display='none';if(b-a<4||!w)return;var s=view[1]-view[0];view=[view[0]+s*a/w,view[0]+s*b/w];layout();});
window.addEventListener('resize',layout);
layout();
document.body.dataset.ready='1';
})();
"""

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info", "unknown")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _script_safe(data: bytes) -> bytes:
    """JSON for a <script> block: '<' only occurs inside JSON strings, where \\u003c is the same."""
    return data.replace(b"<", b"\\u003c")


def write_html(rows: Iterator[dict[str, Any]], out: IO[bytes], query: Any, stats: Any) -> None:
    spool = tempfile.TemporaryFile(prefix="herald-report-")  # noqa: SIM115 - closed in finally
    try:
        head = _header(query)
        out.write(head.encode())
        out.write(b'<div id="lanes">\n')
        entity: str | None = None
        k = 0
        for row in rows:
            if row["entity"] != entity:
                if entity is not None:
                    out.write(b"</div></section>\n")
                entity = row["entity"]
                name = entity or "(no entity)"
                out.write(f'<section class="lane row" data-entity="{_esc(entity)}"><div class="label" title="{_esc(name)}">'
                          f'{_esc(name)}<span class="count"></span></div><div class="track">'.encode())
            herald = row.get("herald") or {}
            classes = f"ev s-{row['severity'] if row['severity'] in SEVERITY_ORDER else 'unknown'}"
            if herald.get("dead_letters"):
                classes += " dl"
            tip = f"{row['event_time']} {row['severity']} {row['title']}"
            out.write(f'<i class="{classes}" data-t="{row["event_time_ns"] / 1e6:.6f}" data-k="{k}" '
                      f'data-id="{_esc(row["event_id"])}" title="{_esc(tip)}"></i>'.encode())
            # the event as text, pretty-printed here: JSON.parse would round 19-digit nanosecond times
            page_row = {k: v for k, v in row.items() if k != "event"}
            page_row["event_text"] = orjson.dumps(row["event"], option=orjson.OPT_INDENT_2).decode()
            spool.write(_script_safe(orjson.dumps(page_row)) + b"\n")
            k += 1
        if entity is not None:
            out.write(b"</div></section>\n")
        out.write(b"</div>\n")
        if k == 0:
            out.write(b'<p id="empty">No events in this window.</p>\n')
        out.write(b"</main>\n" + _DETAILS.encode())
        out.write(b'<script type="application/x-ndjson" id="rows">')
        spool.seek(0)
        while chunk := spool.read(1024 * 1024):
            out.write(chunk)
        out.write(b"</script>\n<script>" + _JS.encode() + b"</script>\n</body></html>\n")
    finally:
        spool.close()


_DETAILS = """<aside id="details" hidden>
<button id="close" title="close">&times;</button>
<h2 id="detail-title"></h2>
<dl id="detail-meta"></dl>
<section id="detail-herald"></section>
<h3>Event</h3>
<pre id="detail-json"></pre>
</aside>
"""


def _header(query: Any) -> str:
    window = " \u2192 ".join([
        format_ns(query.since_ns) if query.since_ns is not None else "the beginning",
        format_ns(query.until_ns) if query.until_ns is not None else "now",
    ])
    legend = "".join(f'<span><i class="s-{s}"></i>{s}</span>' for s in SEVERITY_ORDER)
    where = f' &middot; where <code>{_esc(query.where)}</code>' if query.where else ""
    by = f' &middot; lanes by <code>{_esc(query.by)}</code>' if query.by else ""
    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald timeline</title><style>{_CSS}</style></head><body>
<header><h1>Herald timeline</h1>
<p class="meta">Topic <code>{_esc(query.topics.events)}</code> &middot; window {_esc(window)} (Kafka time){by}{where}
&middot; generated {generated}</p>
<div class="legend">{legend}<span><i class="s-info dl-key" style="box-shadow:0 0 0 2px #fff,0 0 0 4px #000"></i>dead-lettered</span></div>
<div class="controls"><button id="reset" type="button">Reset zoom</button><span id="range" class="hint"></span>
<span class="hint">Drag on the time axis to zoom; click an event for its details and what Herald did.</span></div>
</header>
<main>
<div class="row" id="axis-row"><div class="label">time (UTC)</div><div id="axis"><div id="brush"></div></div></div>
"""
