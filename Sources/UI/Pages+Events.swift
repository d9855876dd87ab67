import API
import Engine
import Foundation
import Hummingbird

extension Pages {
    struct EventView {
        let id: Int64
        let time: String
        let actor: String
        let type: String
        let subject: String
        let result: String
        let ok: Bool
    }

    struct EventsView {
        let events: [EventView]
        let empty: Bool
        let error: String?
        let type: String
        let actor: String
        let subject: String
        let minutes: String
        let streamSource: String
    }

    /// The audit log, newest first: the API's type and since filters, and actor and subject
    /// filters applied to its answer; live.js adds what arrives while the page is open.
    func events(_ request: Request, actor: String) async -> Response {
        let type = Self.query(request, "type")
        let byActor = Self.query(request, "actor")
        let subject = Self.query(request, "subject")
        // The log is read oldest first: by default only its last hour, so a busy agent's page stays quick.
        let minutes = Self.query(request, "minutes").nilIfEmpty ?? "60"
        var query = ["limit=10000"]
        if !type.isEmpty { query.append("type=\(Form.escapeComponent(type))") }
        var minuteError: String?
        if !minutes.isEmpty {
            if let value = Double(minutes), value > 0, value <= 1e6 {
                query.append("since=\(Int(Date().timeIntervalSince1970 - value * 60))")
            } else {
                minuteError = "minutes \(minutes) is not a number of minutes above 0"
            }
        }
        // Pages of 10000, oldest first: the newest 500 that match are shown.
        var rows: [EventBody] = []
        var after: Int64 = 0
        var failure: String?
        while true {
            let page = await get("/v1/events?" + (query + ["after=\(after)"]).joined(separator: "&"), as: [EventBody].self, actor: actor)
            guard case .success(let batch) = page else {
                failure = page.failureMessage
                break
            }
            rows += batch.filter { Self.matches($0, actor: byActor, subject: subject) }
            if rows.count > 500 { rows.removeFirst(rows.count - 500) }
            guard batch.count == 10000, let last = batch.last else { break }
            after = last.id
        }
        var stream = "/ui/events/stream?after=\(rows.last?.id ?? after)"
        for (key, value) in [("type", type), ("actor", byActor), ("subject", subject)] where !value.isEmpty {
            stream += "&\(key)=\(Form.escapeComponent(value))"
        }
        let view = EventsView(events: rows.reversed().map(Self.eventView), empty: rows.isEmpty, error: minuteError ?? failure, type: type,
                              actor: byActor, subject: subject, minutes: minutes, streamSource: stream)
        return ui.render("events", view, title: "Events", section: "events")
    }

    static func matches(_ event: EventBody, actor: String, subject: String) -> Bool {
        (actor.isEmpty || event.actor.contains(actor)) && (subject.isEmpty || event.subject.contains(subject))
    }

    static func eventView(_ event: EventBody) -> EventView {
        EventView(id: event.id, time: Format.time(event.time), actor: event.actor, type: event.type, subject: event.subject, result: event.result,
                  ok: event.result == "ok")
    }

    /// The API's event follow as server-sent events: one event (JSON, with its time as the
    /// page prints it) per line the API streams; the filters as on the events page.
    func eventStream(_ request: Request, actor: String) async -> Response {
        let after = Int64(Self.query(request, "after"))
        let type = Self.query(request, "type")
        let byActor = Self.query(request, "actor")
        let subject = Self.query(request, "subject")
        // Without `after`: what happens from now on (the live regions' "something changed").
        var path = after.map { "/v1/events?follow=true&after=\(max(0, $0))" } ?? "/v1/events?follow=true&since=\(Int(Date().timeIntervalSince1970) - 1)"
        if !type.isEmpty { path += "&type=\(Form.escapeComponent(type))" }
        let answer = await api.send(.get, path, actor: actor)
        guard answer.status == 200 else {
            let message = (try? await answer.collect()).map { String(decoding: $0, as: UTF8.self) } ?? "status \(answer.status)"
            return Self.eventStream(events: [("failed", Self.jsonString(message))])
        }
        return Self.forward(answer.body, end: false) { buffer in
            var text = ""
            for line in String(buffer: buffer).split(separator: "\n") {
                guard let event = try? JSONDecoder().decode(EventBody.self, from: Data(line.utf8)),
                      Self.matches(event, actor: byActor, subject: subject) else { continue }
                let view = Self.eventView(event)
                let object: [String: Any] = ["id": view.id, "time": view.time, "actor": view.actor, "type": view.type, "subject": view.subject,
                                             "result": view.result, "ok": view.ok]
                guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { continue }
                text += "id: \(view.id)\ndata: \(String(decoding: data, as: UTF8.self))\n\n"
            }
            return text.isEmpty ? ": keep-alive\n\n" : text
        }
    }
}
