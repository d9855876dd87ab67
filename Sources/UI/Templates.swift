/// The pages' Mustache templates, compiled into the binary (no files to install). `{{x}}`
/// escapes HTML; `{{{x}}}` is used only for markup the UI made itself (a rendered page body,
/// the agent's own SVG chart).
enum Templates {
    static let all: [(String, String)] = [
        ("layout", layout), ("login", login), ("message", message), ("confirm", confirm),
        ("overview", overview), ("overview-live", overviewLive),
        ("containers", containers), ("containers-table", containersTable), ("container", container),
        ("images", images), ("images-tables", imagesTables),
        ("capacity", capacity), ("pool-table", poolTable),
        ("events", events),
        ("vchs", vchs), ("vchs-table", vchsTable), ("vch", vch), ("vch-wizard", vchWizard),
    ]

    static let layout = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · vmfork</title>
        <style>\(Assets.style)</style>
        <script src="/ui/static/live.js" defer></script>
        </head>
        <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
        <span class="brand">vmfork host agent</span>
        {{#signedIn}}
        <nav aria-label="Main">
        <ul>{{#nav}}<li><a href="{{href}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a></li>{{/nav}}</ul>
        </nav>
        <form method="post" action="/ui/logout" class="logout"><button type="submit">Sign out</button></form>
        {{/signedIn}}
        </header>
        <main id="main">
        <h1>{{title}}</h1>
        {{{body}}}
        </main>
        </body>
        </html>
        """

    static let login = """
        <p>Sign in with a token of this agent's TCP listener: the second word of a line of <code>api-token</code> in its state folder
        (<code>awk '{print $2; exit}' state/api-token</code>).</p>
        {{#message}}<p class="error" role="alert">Error: {{message}}</p>{{/message}}
        <form method="post" action="/ui/login">
        <input type="hidden" name="next" value="{{next}}">
        <div class="field"><label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="current-password" required></div>
        <button type="submit" id="sign-in">Sign in</button>
        </form>
        """

    static let message = """
        <p role="alert">{{text}}</p>
        <p><a href="/ui/">Back to the overview</a></p>
        """

    static let confirm = """
        {{#error}}<p class="error" role="alert">Refused: {{error}}</p>{{/error}}
        <p id="question">{{question}}</p>
        <form method="post" action="{{action}}">
        {{#fields}}<input type="hidden" name="{{label}}" value="{{value}}">{{/fields}}
        {{#forceOption}}<div class="field"><input type="checkbox" id="force" name="force"><label for="force">Also remove its containers (force)</label></div>{{/forceOption}}
        <button type="submit" id="confirm" class="danger">{{verb}}</button>
        <a href="{{back}}" id="cancel">Cancel</a>
        </form>
        """

    static let overview = """
        <div id="live" data-live-src="{{liveSource}}" aria-live="polite">
        {{> overview-live}}
        </div>
        """

    static let overviewLive = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        <section aria-labelledby="now"><h2 id="now">Now</h2>
        <dl class="figures">
        <div><dt>Running containers</dt><dd id="running">{{running}}</dd></div>
        <div><dt>Exited containers</dt><dd id="exited">{{exited}}</dd></div>
        <div><dt>Created, not started</dt><dd>{{created}}</dd></div>
        <div><dt>Warm parent policies</dt><dd>{{parents}}</dd></div>
        <div><dt>VCHs</dt><dd>{{vchs}}</dd></div>
        <div><dt>Memory saved by sharing</dt><dd>{{saved}}</dd></div>
        <div><dt>Forks per second (last 10 min)</dt><dd>{{forksPerSecond}}</dd></div>
        <div><dt>Median fork latency (last 10 min)</dt><dd>{{medianLatency}}</dd></div>
        </dl></section>
        <section aria-labelledby="metrics-h"><h2 id="metrics-h">From the agent's metrics</h2>
        <dl class="figures" id="metrics">{{#metrics}}<div><dt>{{label}}</dt><dd>{{value}}</dd></div>{{/metrics}}</dl></section>
        <section aria-labelledby="forks"><h2 id="forks">Forks per minute</h2>
        <table><caption>Containers forked per minute in the last ten minutes (those still listed), with their median fork latency</caption>
        <thead><tr><th scope="col">Minute</th><th scope="col">Forks</th><th scope="col">Bar</th><th scope="col">Median fork latency</th></tr></thead>
        <tbody>{{#minutes}}<tr><td>{{minute}}</td><td>{{forks}}</td><td><span class="bar"><span class="used" style="width:{{percent}}%"></span></span></td><td>{{medianLatency}}</td></tr>{{/minutes}}</tbody>
        </table></section>
        <section aria-labelledby="hosts"><h2 id="hosts">Hosts</h2>
        <table><thead><tr><th scope="col">Host</th><th scope="col">Kind</th><th scope="col">Health</th><th scope="col">Capacity</th><th scope="col">Used memory</th><th scope="col">Free</th><th scope="col">Forks</th><th scope="col">Warm images</th></tr></thead>
        <tbody>{{#hosts}}<tr><td>{{name}}</td><td>{{kind}}</td><td>{{health}}</td><td>{{capacity}}</td><td>{{used}}</td><td>{{free}}</td><td>{{forks}}</td><td>{{warmImages}}</td></tr>{{/hosts}}</tbody>
        </table></section>
        <section aria-labelledby="pools"><h2 id="pools">Resource pools</h2>
        <ul class="tree">{{#pools}}<li><span class="pool-name">{{indent}}{{name}}</span>
        <span class="bar" role="img" aria-label="{{barText}}"><span class="used" style="width:{{usedPercent}}%"></span><span class="reserved" style="width:{{reservedPercent}}%"></span><span class="free" style="width:{{freePercent}}%"></span></span>
        <span class="bar-text">{{barText}}</span></li>{{/pools}}</ul>
        </section>
        """

    static let containers = """
        {{#message}}<p class="note" role="status">{{message}}</p>{{/message}}
        <form method="get" action="/ui/containers" class="filters" aria-label="Filter containers">
        <div class="field"><label for="f-vch">VCH</label><select id="f-vch" name="vch">{{#vchs}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/vchs}}</select></div>
        <div class="field"><label for="f-image">Image</label><select id="f-image" name="image">{{#images}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/images}}</select></div>
        <div class="field"><label for="f-state">State</label><select id="f-state" name="state">{{#states}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/states}}</select></div>
        <div class="field"><label for="f-label">Label (KEY or KEY=VALUE)</label><input id="f-label" name="label" value="{{label}}"></div>
        <button type="submit">Filter</button>
        </form>
        <div id="live" data-live-src="{{liveSource}}" aria-live="polite">
        {{> containers-table}}
        </div>
        """

    static let containersTable = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        <table id="containers-table"><caption>{{count}} container(s)</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Image</th><th scope="col">Command</th><th scope="col">Uptime</th>
        <th scope="col">Memory private / shared</th><th scope="col">Exit status</th><th scope="col">VCH</th><th scope="col">Actions</th></tr></thead>
        <tbody>
        {{#rows}}<tr data-id="{{id}}" data-name="{{name}}">
        <td><a href="/ui/containers/{{id}}">{{name}}</a><br><small>{{shortID}}</small></td>
        <td class="state" data-state="{{state}}"><span class="badge {{state}}">{{state}}</span></td>
        <td>{{image}}</td><td><code>{{command}}</code></td><td>{{uptime}}</td>
        <td>{{memory}}</td><td>{{exitStatus}}</td><td>{{vch}}</td>
        <td class="actions">{{#running}}<a class="button" href="/ui/containers/{{id}}/confirm?action=stop" aria-label="Stop {{name}}">Stop</a>
        <a class="button" href="/ui/containers/{{id}}/confirm?action=kill" aria-label="Kill {{name}}">Kill</a>{{/running}}
        <a class="button" href="/ui/containers/{{id}}/confirm?action=remove" aria-label="Remove {{name}}">Remove</a></td>
        </tr>{{/rows}}
        </tbody></table>
        {{#empty}}<p>No containers match.</p>{{/empty}}
        """

    static let container = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        {{#container}}
        <p class="actions">{{#running}}<a class="button" href="/ui/containers/{{id}}/confirm?action=stop">Stop</a>
        <a class="button" href="/ui/containers/{{id}}/confirm?action=kill">Kill</a>{{/running}}
        <a class="button" href="/ui/containers/{{id}}/confirm?action=remove">Remove</a></p>
        <dl class="fields" id="fields">
        <div><dt>Id</dt><dd data-field="id">{{id}}</dd></div>
        <div><dt>Name</dt><dd data-field="name">{{name}}</dd></div>
        <div><dt>State</dt><dd data-field="state">{{state}}</dd></div>
        <div><dt>Image</dt><dd data-field="image">{{image}}</dd></div>
        <div><dt>Command</dt><dd data-field="command"><code>{{command}}</code></dd></div>
        <div><dt>Exit code</dt><dd data-field="exitCode">{{exitCode}}</dd></div>
        <div><dt>Exit reason</dt><dd data-field="exitReason">{{exitReason}}</dd></div>
        <div><dt>Hostname</dt><dd data-field="hostname">{{hostname}}</dd></div>
        <div><dt>Memory limit</dt><dd data-field="memoryMiB">{{memoryMiB}} MiB</dd></div>
        <div><dt>Memory private / shared</dt><dd data-field="memory">{{memory}}</dd></div>
        <div><dt>Pool</dt><dd data-field="pool">{{pool}}</dd></div>
        <div><dt>VCH</dt><dd data-field="vch">{{vch}}</dd></div>
        <div><dt>Warm parent</dt><dd data-field="parent">{{parent}}</dd></div>
        <div><dt>Labels</dt><dd data-field="labels">{{labels}}</dd></div>
        <div><dt>Created</dt><dd data-field="created">{{created}}</dd></div>
        <div><dt>Started</dt><dd data-field="started">{{started}}</dd></div>
        <div><dt>Finished</dt><dd data-field="finished">{{finished}}</dd></div>
        <div><dt>Fork latency</dt><dd data-field="forkLatency">{{forkLatency}}</dd></div>
        <div><dt>Uptime</dt><dd data-field="uptime">{{uptime}}</dd></div>
        </dl>
        <h2 id="logs-heading">Logs <small id="logs-state" role="status">connecting…</small></h2>
        <pre id="logs" class="logs" data-log-src="/ui/containers/{{id}}/logs" aria-labelledby="logs-heading" tabindex="0"></pre>
        {{/container}}
        <details><summary>Inspect (the API's JSON)</summary><pre id="inspect">{{inspect}}</pre></details>
        """

    static let images = """
        {{#message}}<p class="note" role="status" id="pull-result">{{message}}</p>{{/message}}
        <form method="post" action="/ui/images/pull" id="pull-form" class="filters" aria-label="Pull an image">
        <div class="field"><label for="reference">Image reference to pull</label><input id="reference" name="reference" value="{{reference}}" placeholder="127.0.0.1:5000/busybox:latest" required></div>
        <div class="field"><label for="pull-name">Register as (optional name)</label><input id="pull-name" name="name"></div>
        <button type="submit">Pull</button>
        <span id="pull-progress" hidden role="status"><progress id="pull-bar" aria-label="Bytes of the image's layers arrived"></progress> <span id="pull-progress-text">Pulling…</span></span>
        </form>
        <div id="live" data-live-src="{{liveSource}}" aria-live="polite">
        {{> images-tables}}
        </div>
        """

    static let parentRows = """
        <table><thead><tr><th scope="col">Parent policy</th><th scope="col">State</th><th scope="col">Fork point</th><th scope="col">Guest memory</th>
        <th scope="col">Parents</th><th scope="col">Ready VMs</th><th scope="col">Live children</th><th scope="col">Pool misses</th>
        <th scope="col">Parent memory</th><th scope="col">Child private / shared (median)</th><th scope="col">Saved by sharing</th><th scope="col">Actions</th></tr></thead>
        <tbody>{{#parents}}<tr data-parent="{{id}}"><td>{{id}}</td><td>{{state}}{{#failure}} ({{failure}}){{/failure}}</td><td>{{forkPoint}}</td><td>{{memoryMiB}} MiB</td>
        <td>{{parents}}</td><td>{{readyVMs}}</td><td>{{children}}</td><td>{{poolMisses}}</td><td>{{parentMemory}}</td><td>{{childPrivate}} / {{childShared}}</td><td>{{saved}}</td>
        <td><a class="button" href="{{evictHref}}" aria-label="Evict {{id}}">Evict</a></td></tr>{{/parents}}</tbody></table>
        """

    static let imagesTables = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        {{#empty}}<p>No images yet: pull one above, or register a rootfs with <code>vmfork image add</code>.</p>{{/empty}}
        {{#images}}
        <section class="image" aria-labelledby="image-{{name}}">
        <h2 id="image-{{name}}">Image {{name}}</h2>
        <p>{{executable}} <code>{{command}}</code> · rootfs {{rootfs}} · default fork point {{forkPoint}} · added {{created}}</p>
        {{#hasParents}}\(parentRows){{/hasParents}}
        {{^hasParents}}<p>No warm parents: the first container of this image makes one.</p>{{/hasParents}}
        </section>
        {{/images}}
        {{#hasOrphans}}<h2>Warm parents of images no longer listed</h2>
        <ul>{{#orphanParents}}<li>{{id}} (image {{image}}, {{state}}, {{children}} live children) <a class="button" href="{{evictHref}}" aria-label="Evict {{id}}">Evict</a></li>{{/orphanParents}}</ul>{{/hasOrphans}}
        """

    static let poolTable = """
        <table><thead><tr><th scope="col">Pool</th><th scope="col">Reservation</th><th scope="col">Memory limit</th><th scope="col">Shares</th><th scope="col">Expandable</th>
        <th scope="col">Held</th><th scope="col">Used by forks</th><th scope="col">Used by warm parents</th><th scope="col">Free</th><th scope="col">Forks</th>
        <th scope="col">Headroom per image</th><th scope="col">Runway</th></tr></thead>
        <tbody>{{#pools}}<tr><td>{{indent}}{{name}}</td><td>{{reservation}}</td><td>{{limit}}</td><td>{{shares}}</td><td>{{expandable}}</td><td>{{held}}</td>
        <td>{{usedByForks}}</td><td>{{usedByParents}}</td><td>{{free}}</td><td>{{forks}}</td><td>{{headroom}}</td><td>{{runway}}</td></tr>{{/pools}}</tbody></table>
        """

    static let capacity = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        <section aria-labelledby="totals"><h2 id="totals">Totals</h2>
        <dl class="figures">{{#totals}}<div><dt>{{label}}</dt><dd>{{value}}</dd></div>{{/totals}}</dl></section>
        <section aria-labelledby="pools-h"><h2 id="pools-h">Pools and headroom</h2>
        <div id="pools-table">{{> pool-table}}</div></section>
        <section aria-labelledby="hosts-h"><h2 id="hosts-h">Hosts</h2>
        <table><thead><tr><th scope="col">Host</th><th scope="col">Kind</th><th scope="col">Health</th><th scope="col">Capacity</th><th scope="col">Used memory</th><th scope="col">Free</th><th scope="col">Forks</th><th scope="col">Warm images</th></tr></thead>
        <tbody>{{#hosts}}<tr><td>{{name}}</td><td>{{kind}}</td><td>{{health}}</td><td>{{capacity}}</td><td>{{used}}</td><td>{{free}}</td><td>{{forks}}</td><td>{{warmImages}}</td></tr>{{/hosts}}</tbody>
        </table></section>
        <section aria-labelledby="chart-h"><h2 id="chart-h">Chart</h2><div class="chart" id="capacity-chart">{{{svg}}}</div></section>
        <section aria-labelledby="whatif-h"><h2 id="whatif-h">What if</h2>
        <p>The planner's runway for a pool if this many containers of an image were launched into it every second.</p>
        <form method="get" action="/ui/capacity" class="filters" aria-label="What if">
        <div class="field"><label for="w-rate">Launches per second</label><input id="w-rate" name="rate" inputmode="decimal" value="{{rate}}" required></div>
        <div class="field"><label for="w-pool">Pool</label><select id="w-pool" name="pool">{{#whatIfPools}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/whatIfPools}}</select></div>
        <div class="field"><label for="w-image">Image</label><select id="w-image" name="image">{{#whatIfImages}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/whatIfImages}}</select></div>
        <div class="field"><label for="w-lifetime">Container lifetime in seconds (empty: they keep running)</label><input id="w-lifetime" name="lifetime" inputmode="decimal" value="{{lifetime}}"></div>
        <button type="submit">Plan</button>
        </form>
        {{#whatIfError}}<p class="error" role="alert">Refused: {{whatIfError}}</p>{{/whatIfError}}
        {{#hasWhatIf}}<div id="what-if-result">{{#whatIf}}<p><strong>{{name}}</strong>: {{runway}}</p>{{/whatIf}}</div>{{/hasWhatIf}}
        </section>
        """

    static let events = """
        <form method="get" action="/ui/events" class="filters" aria-label="Filter events">
        <div class="field"><label for="e-type">Types (comma-separated, e.g. container.create,vch.create)</label><input id="e-type" name="type" value="{{type}}"></div>
        <div class="field"><label for="e-actor">Actor contains</label><input id="e-actor" name="actor" value="{{actor}}"></div>
        <div class="field"><label for="e-subject">Subject contains</label><input id="e-subject" name="subject" value="{{subject}}"></div>
        <div class="field"><label for="e-minutes">In the last N minutes (default 60)</label><input id="e-minutes" name="minutes" inputmode="decimal" value="{{minutes}}"></div>
        <button type="submit">Filter</button>
        </form>
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        <p id="follow-state" role="status">Following new events…</p>
        <table id="events-table" data-stream-src="{{streamSource}}"><caption>Newest first (at most 500 shown, new ones added live)</caption>
        <thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Type</th><th scope="col">Subject</th><th scope="col">Result</th></tr></thead>
        <tbody>{{#events}}<tr data-event="{{id}}"><td>{{time}}</td><td>{{actor}}</td><td>{{type}}</td><td>{{subject}}</td><td>{{#ok}}ok{{/ok}}{{^ok}}<span class="error">failed: {{result}}</span>{{/ok}}</td></tr>{{/events}}</tbody>
        </table>
        {{#empty}}<p id="no-events">No events match.</p>{{/empty}}
        """

    static let vchs = """
        {{#message}}<p class="note" role="status">{{message}}</p>{{/message}}
        <p><a class="button" href="/ui/vchs/new" id="create-vch">Create a VCH</a></p>
        <div id="live" data-live-src="{{liveSource}}" aria-live="polite">
        {{> vchs-table}}
        </div>
        """

    static let vchsTable = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        <table id="vchs-table"><thead><tr><th scope="col">VCH</th><th scope="col">Pool</th><th scope="col">State</th><th scope="col">Containers</th><th scope="col">docker -H</th><th scope="col">Actions</th></tr></thead>
        <tbody>{{#vchs}}<tr data-vch="{{name}}"><td><a href="{{href}}">{{name}}</a></td><td>{{pool}}</td><td>{{state}}{{#failure}}: {{failure}}{{/failure}}</td><td>{{containers}}</td>
        <td><code>{{dockerHost}}</code></td><td><a class="button" href="{{href}}/confirm" aria-label="Delete {{name}}">Delete</a></td></tr>{{/vchs}}</tbody></table>
        {{#empty}}<p>No VCHs yet.</p>{{/empty}}
        """

    static let vch = """
        {{#error}}<p class="error" role="alert">Error: {{error}}</p>{{/error}}
        {{#message}}<p class="note" role="status">{{message}}</p>{{/message}}
        {{#vch}}
        {{#created}}<p class="note" role="status" id="created">VCH {{name}} was created and is listening.</p>{{/created}}
        <p>Point the docker CLI at it:</p>
        <pre><code id="docker-command">{{dockerCommand}}</code></pre>
        <p>or <code>export DOCKER_HOST={{dockerHost}}</code>.{{#tokenFile}} On TCP the CLI sends the token in <code>{{tokenFile}}</code>
        through <code>~/.docker/config.json</code>: <code>{"HttpHeaders": {"Authorization": "Bearer TOKEN"}}</code>.{{/tokenFile}}</p>
        <dl class="figures"><div><dt>Pool</dt><dd>{{pool}}</dd></div><div><dt>State</dt><dd id="vch-state">{{state}}{{#failure}}: {{failure}}{{/failure}}</dd></div>
        <div><dt>Containers</dt><dd>{{containers}}</dd></div><div><dt>Created</dt><dd>{{created}}</dd></div></dl>
        <p><a class="button" href="{{href}}/confirm">Delete this VCH</a> <a href="/ui/containers?vch={{name}}">Its containers in the containers table</a></p>
        {{/vch}}
        <table><caption>Its containers</caption><thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Image</th><th scope="col">Command</th><th scope="col">Exit status</th></tr></thead>
        <tbody>{{#containers}}<tr><td><a href="/ui/containers/{{id}}">{{name}}</a></td><td>{{state}}</td><td>{{image}}</td><td><code>{{command}}</code></td><td>{{exitCode}}</td></tr>{{/containers}}</tbody></table>
        """

    static let vchWizard = """
        <p>A Virtual Container Host is a Docker Engine API endpoint for one resource pool: every <code>docker run</code> against it forks a container charged to that pool.</p>
        {{#message}}<p class="error" role="alert" id="wizard-message">{{message}}</p>{{/message}}
        <form method="post" action="/ui/vchs" id="vch-wizard" novalidate>
        <fieldset><legend>Step 1 of 4: name</legend>
        <div class="field"><label for="name">VCH name</label>
        <input id="name" name="name" value="{{name.value}}" aria-describedby="name-help{{#name.error}} name-error{{/name.error}}"{{#name.error}} aria-invalid="true"{{/name.error}}>
        <small id="name-help">1-30 letters, digits, '_' or '-'. Its containers are labelled vmfork.vch=NAME.</small>
        {{#name.error}}<span class="field-error" id="name-error">Error: {{name.error}}</span>{{/name.error}}</div>
        </fieldset>
        <fieldset><legend>Step 2 of 4: resource pool</legend>
        <div class="field"><input type="radio" id="pool-existing" name="poolChoice" value="existing"{{#existingPool}} checked{{/existingPool}}><label for="pool-existing">Use an existing pool</label></div>
        <div class="field indent"><label for="pool">Existing pool</label><select id="pool" name="pool"{{#poolError}} aria-invalid="true" aria-describedby="pool-error"{{/poolError}}>{{#pools}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/pools}}</select>
        {{#poolError}}<span class="field-error" id="pool-error">Error: {{poolError}}</span>{{/poolError}}</div>
        <div class="field"><input type="radio" id="pool-new" name="poolChoice" value="new"{{#newPool}} checked{{/newPool}}><label for="pool-new">Create a new pool under the root</label></div>
        <div class="field indent"><label for="newPool">New pool name</label><input id="newPool" name="newPool" value="{{newPoolName.value}}"{{#newPoolName.error}} aria-invalid="true" aria-describedby="newPool-error"{{/newPoolName.error}}>
        {{#newPoolName.error}}<span class="field-error" id="newPool-error">Error: {{newPoolName.error}}</span>{{/newPoolName.error}}</div>
        <div class="field indent"><label for="reservationMiB">Memory reservation (MiB)</label><input id="reservationMiB" name="reservationMiB" inputmode="numeric" value="{{reservation.value}}"{{#reservation.error}} aria-invalid="true" aria-describedby="reservationMiB-error"{{/reservation.error}}>
        {{#reservation.error}}<span class="field-error" id="reservationMiB-error">Error: {{reservation.error}}</span>{{/reservation.error}}</div>
        <div class="field indent"><label for="limitMiB">Memory limit (MiB, empty for none)</label><input id="limitMiB" name="limitMiB" inputmode="numeric" value="{{limit.value}}"{{#limit.error}} aria-invalid="true" aria-describedby="limitMiB-error"{{/limit.error}}>
        {{#limit.error}}<span class="field-error" id="limitMiB-error">Error: {{limit.error}}</span>{{/limit.error}}</div>
        <div class="field indent"><label for="shares">Shares</label><input id="shares" name="shares" inputmode="numeric" value="{{shares.value}}"{{#shares.error}} aria-invalid="true" aria-describedby="shares-error"{{/shares.error}}>
        {{#shares.error}}<span class="field-error" id="shares-error">Error: {{shares.error}}</span>{{/shares.error}}</div>
        <div class="field indent"><input type="checkbox" id="expandable" name="expandable"{{#expandable}} checked{{/expandable}}><label for="expandable">Expandable reservation (may borrow from its parent)</label></div>
        </fieldset>
        <fieldset><legend>Step 3 of 4: listening endpoint</legend>
        <div class="field"><input type="radio" id="listen-unix" name="listen" value="unix"{{#unixListen}} checked{{/unixListen}}><label for="listen-unix">Unix socket in the agent's state folder (mode 0600)</label></div>
        <div class="field"><input type="radio" id="listen-tcp" name="listen" value="tcp"{{#tcpListen}} checked{{/tcpListen}}><label for="listen-tcp">TCP on 127.0.0.1 with a bearer token</label></div>
        <div class="field indent"><label for="port">TCP port (1024-65535)</label><input id="port" name="port" inputmode="numeric" value="{{port.value}}"{{#port.error}} aria-invalid="true" aria-describedby="port-error"{{/port.error}}>
        {{#port.error}}<span class="field-error" id="port-error">Error: {{port.error}}</span>{{/port.error}}</div>
        {{#listenError}}<span class="field-error" id="listen-error">Error: {{listenError}}</span>{{/listenError}}
        </fieldset>
        <fieldset><legend>Step 4 of 4: images to keep warm</legend>
        <div class="field"><label for="warmImage">Keep warm parents of</label><select id="warmImage" name="warmImage"{{#warmImageError}} aria-invalid="true"{{/warmImageError}}>{{#images}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/images}}</select>
        {{#warmImageError}}<span class="field-error">Error: {{warmImageError}}</span>{{/warmImageError}}</div>
        <div class="field"><label for="parents">How many parents</label><input id="parents" name="parents" inputmode="numeric" value="{{parents.value}}"{{#parents.error}} aria-invalid="true" aria-describedby="parents-error"{{/parents.error}}>
        {{#parents.error}}<span class="field-error" id="parents-error">Error: {{parents.error}}</span>{{/parents.error}}</div>
        </fieldset>
        <button type="submit" id="create">Create VCH</button> <a href="/ui/vchs">Cancel</a>
        </form>
        """
}
