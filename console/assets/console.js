// The Vexa console's only script (the Content Security Policy allows nothing else).
// Agent output is data: it is painted with text nodes, never parsed as HTML.
'use strict';

// Entry ids are "<ms>-<seq>"; compares them as the stream orders them.
function newer(a, b) {
  if (b === null) return true;
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am > bm || (am === bm && as > bs);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// The live conversation of a dispatch: one section per turn.
function follow(pane) {
  const state = document.getElementById('stream-state');
  let last = null;
  let connections = 0;
  let duplicates = 0;
  const turns = new Map();
  const turn = (id) => {
    if (!turns.has(id)) {
      const section = el('section', 'turn');
      section.dataset.turn = id;
      section.append(el('h3', null, 'Turn ' + id));
      const reply = el('pre', 'reply');
      section.append(reply);
      pane.append(section);
      turns.set(id, { section, reply });
    }
    return turns.get(id);
  };
  const line = (t, cls, text) => t.section.append(el('p', cls, text));
  const paint = (u) => {
    const t = turn(u.turn_id);
    switch (u.type) {
      case 'message-delta':
        t.reply.append(document.createTextNode(u.text));
        break;
      case 'tool-call':
        line(t, 'tool', 'tool ' + u.tool + ' ' + JSON.stringify(u.args));
        break;
      case 'tool-result':
        line(t, u.ok ? 'tool' : 'tool error', (u.ok ? 'ok ' : 'failed ') + u.summary);
        break;
      case 'done':
        t.section.dataset.done = u.ok ? 'ok' : 'error';
        if (!u.ok) line(t, 'error', 'the turn failed');
        break;
      case 'commit':
        line(t, 'commit', 'commit ' + u.sha);
        t.section.dataset.commit = u.sha;
        break;
      case 'turn-complete':
        t.section.dataset.complete = 'true';
        break;
      case 'auth-error':
      case 'model-error':
        line(t, 'error', u.type + ': ' + u.error);
        break;
      case 'card':
        line(t, 'card', 'card proposed: ' + (u.card && u.card.title));
        break;
      case 'note':
        line(t, 'note', u.note);
        break;
      default:
        line(t, 'note', 'unknown event ' + String(u.type));
    }
  };
  const source = new EventSource(pane.dataset.src);
  source.addEventListener('open', () => {
    connections += 1;
    pane.dataset.connections = String(connections);
    state.textContent = connections > 1 ? 'reconnected' : 'live';
  });
  source.addEventListener('unit', (m) => {
    if (!newer(m.lastEventId, last)) {
      duplicates += 1;
      pane.dataset.duplicates = String(duplicates);
      return;
    }
    last = m.lastEventId;
    pane.dataset.last = last;
    paint(JSON.parse(m.data));
  });
  source.addEventListener('malformed', (m) => {
    last = m.lastEventId;
    pane.append(el('p', 'error', 'an entry that is not an event: ' + JSON.parse(m.data)));
  });
  source.addEventListener('end', (m) => {
    source.close();
    pane.dataset.ended = JSON.parse(m.data);
    state.textContent = 'the run has ended (' + JSON.parse(m.data) + ')';
    for (const f of document.querySelectorAll('#turn, #stop')) f.remove();
  });
  source.addEventListener('refused', (m) => {
    source.close();
    state.textContent = JSON.parse(m.data);
    state.className = 'error';
  });
  source.addEventListener('error', () => {
    if (source.readyState !== EventSource.CLOSED) state.textContent = 'reconnecting…';
  });
}

// The next turn is sent without leaving the page, so the stream keeps flowing.
function sendTurns(form) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    const button = form.querySelector('button');
    button.disabled = true;
    const state = document.getElementById('stream-state');
    try {
      const res = await fetch(form.action, {
        method: 'POST',
        body,
        headers: { Accept: 'application/json' },
        credentials: 'same-origin',
      });
      const answer = await res.json();
      if (res.ok) {
        form.querySelector('textarea').value = '';
      } else {
        state.textContent = answer.error;
        state.className = 'error';
      }
    } catch (e) {
      // The message stays in the box: nothing was lost, it can be sent again.
      state.textContent = 'could not send (' + e.message + '); try again';
      state.className = 'error';
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener('DOMContentLoaded', () => {
  const pane = document.getElementById('stream');
  if (pane) follow(pane);
  const form = document.getElementById('turn');
  if (form) sendTurns(form);
  const live = document.querySelector('[data-refresh]');
  if (live) setTimeout(() => location.reload(), Number(live.dataset.refresh) * 1000);
});
