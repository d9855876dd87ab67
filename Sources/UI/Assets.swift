/// The UI's style sheet (inlined in every page) and its one script (served at
/// /ui/static/live.js), both written by hand; nothing is fetched from elsewhere.
enum Assets {
    static let style = """
        :root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --accent: #0b5cad; --bad: #a40e26; --ok: #116329; }
        * { box-sizing: border-box; }
        body { font: 15px/1.45 system-ui, sans-serif; color: var(--fg); margin: 0; }
        header { display: flex; flex-wrap: wrap; align-items: center; gap: 1rem; padding: .5rem 1rem; border-bottom: 1px solid var(--line); background: #f6f8fa; }
        .brand { font-weight: 600; }
        nav ul { list-style: none; display: flex; flex-wrap: wrap; gap: .25rem 1rem; margin: 0; padding: 0; }
        nav a[aria-current="page"] { font-weight: 700; text-decoration: underline; }
        .logout { margin-left: auto; }
        main { padding: 0 1rem 2rem; max-width: 110rem; }
        a { color: var(--accent); }
        a:focus, button:focus, input:focus, select:focus, pre:focus { outline: 3px solid #f0b400; outline-offset: 1px; }
        .skip { position: absolute; left: -999px; } .skip:focus { left: 1rem; top: .5rem; background: #fff; padding: .25rem; }
        table { border-collapse: collapse; margin: .5rem 0 1rem; }
        caption { text-align: left; color: var(--muted); padding: .25rem 0; }
        th, td { border-bottom: 1px solid var(--line); padding: .3rem .6rem; text-align: left; vertical-align: top; }
        code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
        pre.logs { background: #0d1117; color: #e6edf3; padding: .75rem; max-height: 24rem; overflow: auto; white-space: pre-wrap; }
        .button, button { display: inline-block; padding: .2rem .6rem; border: 1px solid var(--line); border-radius: 4px; background: #f6f8fa; color: var(--fg); text-decoration: none; font: inherit; cursor: pointer; }
        button.danger { background: var(--bad); color: #fff; border-color: var(--bad); }
        .badge { padding: 0 .4rem; border-radius: 3px; border: 1px solid var(--line); }
        .badge.running { background: #dafbe1; } .badge.exited { background: #eaeef2; } .badge.created { background: #fff8c5; }
        .error, .field-error { color: var(--bad); font-weight: 600; }
        .note { border-left: 4px solid var(--accent); padding: .25rem .75rem; background: #ddf4ff; }
        .filters { display: flex; flex-wrap: wrap; align-items: end; gap: .75rem; margin: .5rem 0; }
        .field { margin: .35rem 0; } .field label { display: block; font-weight: 600; }
        .field input[type=radio] + label, .field input[type=checkbox] + label { display: inline; font-weight: normal; margin-left: .3rem; }
        .indent { margin-left: 1.75rem; }
        fieldset { border: 1px solid var(--line); margin: .75rem 0; max-width: 48rem; } legend { font-weight: 700; }
        small { color: var(--muted); display: block; }
        dl.figures { display: flex; flex-wrap: wrap; gap: .5rem 2rem; } dl.figures dt { color: var(--muted); } dl.figures dd { margin: 0; font-size: 1.3rem; }
        dl.fields div { display: flex; gap: 1rem; } dl.fields dt { width: 18rem; color: var(--muted); } dl.fields dd { margin: 0; }
        .bar { display: inline-flex; width: 16rem; height: .9rem; border: 1px solid var(--muted); vertical-align: middle; background: #fff; }
        .bar .used { background: #0b5cad; } .bar .reserved { background: repeating-linear-gradient(45deg, #9ec5fe, #9ec5fe 3px, #fff 3px, #fff 6px); } .bar .free { background: #fff; }
        .bar-text { margin-left: .5rem; color: var(--muted); }
        ul.tree { list-style: none; padding: 0; } ul.tree li { margin: .3rem 0; } .pool-name { display: inline-block; min-width: 10rem; font-family: ui-monospace, monospace; }
        .chart svg { max-width: 100%; height: auto; }
        """

    /// Live updates: a page's `#live` region is fetched again (its fragment) when the audit
    /// log says something changed; the events table gets new rows; a container's logs stream
    /// in; the pull form shows progress while the agent pulls. All over server-sent events.
    static let liveScript = """
        'use strict';
        (function () {
          function text(s) { return document.createTextNode(s); }
          var live = document.getElementById('live');
          if (live && live.dataset.liveSrc) {
            // At most one refresh every two seconds, however busy the agent is.
            var timer = null, busy = false, last = 0;
            var refresh = function () {
              timer = null;
              if (busy) { schedule(); return; }
              busy = true;
              last = Date.now();
              fetch(live.dataset.liveSrc, { credentials: 'same-origin' }).then(function (r) {
                if (r.ok) { return r.text().then(function (html) { live.innerHTML = html; }); }
              }).finally(function () { busy = false; });
            };
            var schedule = function () {
              if (timer === null) { timer = setTimeout(refresh, Math.max(250, last + 2000 - Date.now())); }
            };
            var changes = new EventSource('/ui/events/stream');
            changes.onmessage = schedule;
            // Uptimes move on even when nothing happens.
            setInterval(refresh, 15000);
          }
          var table = document.getElementById('events-table');
          if (table && table.dataset.streamSrc) {
            var body = table.tBodies[0], state = document.getElementById('follow-state'), seen = 0;
            var rows = body.querySelectorAll('tr[data-event]');
            for (var i = 0; i < rows.length; i++) { seen = Math.max(seen, Number(rows[i].dataset.event)); }
            var events = new EventSource(table.dataset.streamSrc);
            events.onopen = function () { state.textContent = 'Following new events (live).'; };
            events.onerror = function () { state.textContent = 'Connection lost; reconnecting…'; };
            events.onmessage = function (message) {
              var e = JSON.parse(message.data);
              if (e.id <= seen) { return; }
              seen = e.id;
              var row = body.insertRow(0);
              row.dataset.event = e.id;
              [e.time, e.actor, e.type, e.subject].forEach(function (v) { row.insertCell().appendChild(text(v)); });
              var result = row.insertCell();
              if (e.ok) { result.appendChild(text('ok')); } else { var s = document.createElement('span'); s.className = 'error'; s.appendChild(text('failed: ' + e.result)); result.appendChild(s); }
              var none = document.getElementById('no-events'); if (none) { none.remove(); }
              while (body.rows.length > 500) { body.deleteRow(body.rows.length - 1); }
            };
          }
          var logs = document.getElementById('logs');
          if (logs && logs.dataset.logSrc) {
            var logState = document.getElementById('logs-state');
            var source = new EventSource(logs.dataset.logSrc);
            source.onopen = function () { logState.textContent = '(following)'; };
            source.onmessage = function (message) {
              var atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
              logs.appendChild(text(JSON.parse(message.data)));
              if (atEnd) { logs.scrollTop = logs.scrollHeight; }
            };
            source.addEventListener('failed', function (message) { logState.textContent = '(cannot read: ' + JSON.parse(message.data) + ')'; });
            source.addEventListener('end', function () { source.close(); logState.textContent = '(ended)'; });
          }
          var pull = document.getElementById('pull-form');
          if (pull) {
            // The pull is posted from here (the form works without the script too), so the page
            // stays live, showing the agent's figures, until the agent answers.
            pull.addEventListener('submit', function (event) {
              event.preventDefault();
              var progress = document.getElementById('pull-progress'), label = document.getElementById('pull-progress-text');
              var reference = document.getElementById('reference').value, started = Date.now();
              var bar = document.getElementById('pull-bar');
              var mib = function (bytes) { return (bytes / 1048576).toFixed(1) + ' MiB'; };
              var phases = { manifest: 'reading the manifest', layers: 'downloading layers', unpacking: 'unpacking' };
              progress.hidden = false;
              label.textContent = 'Pulling ' + reference + '…';
              // The agent's own figures (GET /v1/pulls) while the form's request waits for the pull.
              setInterval(function () {
                var seconds = Math.round((Date.now() - started) / 1000) + ' s';
                fetch('/ui/images/pulls', { credentials: 'same-origin' }).then(function (r) { return r.ok ? r.json() : []; }).then(function (pulls) {
                  var mine = pulls.filter(function (p) { return reference.indexOf(p.reference.split('/').pop().split(':')[0]) >= 0; }).pop() || pulls[pulls.length - 1];
                  if (!mine) { label.textContent = 'Pulling ' + reference + '… ' + seconds; return; }
                  if (mine.bytesTotal > 0) { bar.max = mine.bytesTotal; bar.value = mine.bytesDone; }
                  label.textContent = 'Pulling ' + reference + ': ' + (phases[mine.phase] || mine.phase) + ', ' + mib(mine.bytesDone) + ' of ' + mib(mine.bytesTotal)
                    + ' (' + mine.layers + ' layer' + (mine.layers === 1 ? '' : 's') + '), ' + seconds;
                });
              }, 250);
              pull.querySelector('button[type=submit]').disabled = true;
              fetch(pull.action, { method: 'POST', body: new URLSearchParams(new FormData(pull)), credentials: 'same-origin' })
                .then(function (r) { location.href = r.url; })
                .catch(function () { pull.submit(); });
            });
          }
        })();
        """
}
