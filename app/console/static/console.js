// Herald console: the only script of the pages (served from /static; the CSP forbids inline code).
// Live page: new and updated events arrive over SSE and are written with textContent (never HTML).
'use strict';
(function () {
  const body = document.body;

  function cell(cls, text) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function row(s) {
    const tr = document.createElement('tr');
    tr.className = 'ev';
    tr.dataset.id = s.event_id;
    tr.appendChild(cell('time', s.time));
    tr.appendChild(cell('source', s.source));
    tr.appendChild(cell('entity', s.entity));
    tr.appendChild(cell('sev sev-' + s.severity, s.severity));
    const title = cell('title', '');
    const a = document.createElement('a');
    a.href = '/events/' + encodeURIComponent(s.event_id);
    a.textContent = s.title || s.event_id;
    title.appendChild(a);
    tr.appendChild(title);
    const routes = cell('routes', '');
    for (const r of s.routes) {
      const span = document.createElement('span');
      span.className = 'r';
      span.textContent = r;
      routes.appendChild(span);
    }
    tr.appendChild(routes);
    const outcomes = cell('outcomes', '');
    for (const action of Object.keys(s.outcomes).sort()) {
      const span = document.createElement('span');
      span.className = 'o o-' + s.outcomes[action].replace(/ /g, '-');
      span.dataset.action = action;
      span.textContent = action + ': ' + s.outcomes[action];
      outcomes.appendChild(span);
    }
    tr.appendChild(outcomes);
    tr.appendChild(cell('outcome o-' + s.outcome.replace(/ /g, '-'), s.outcome));
    return tr;
  }

  function live() {
    const tbody = document.getElementById('events');
    const status = document.getElementById('live-status');
    const source = new EventSource(body.dataset.stream);
    source.onopen = () => { status.textContent = 'live'; body.dataset.live = '1'; };
    source.onerror = () => { status.textContent = 'reconnecting…'; body.dataset.live = '0'; };
    source.onmessage = (msg) => {
      const s = JSON.parse(msg.data);
      const fresh = row(s);
      const old = Array.from(tbody.rows).find((tr) => tr.dataset.id === s.event_id);
      if (old) {
        old.replaceWith(fresh);
      } else {
        tbody.insertBefore(fresh, tbody.firstChild);
        while (tbody.rows.length > 200) tbody.deleteRow(tbody.rows.length - 1);
      }
      const empty = document.getElementById('empty');
      if (empty) empty.remove();
    };
    for (const sel of document.querySelectorAll('#filters select')) {
      sel.addEventListener('change', () => document.getElementById('filters').submit());
    }
  }

  function deadLetters() {
    for (const all of document.querySelectorAll('input.all')) {
      all.addEventListener('change', () => {
        for (const box of all.closest('table').querySelectorAll('tbody input[type=checkbox]')) box.checked = all.checked;
      });
    }
  }

  if (body.dataset.page === '/' && body.dataset.stream) live();
  if (body.dataset.page === '/dlq') deadLetters();
  body.dataset.ready = '1';
})();
