import Foundation
import Store

extension ImageRecord {
    init(row: EngineImageRow) {
        let decoder = JSONDecoder()
        self.init(name: row.name, rootfs: row.rootfs, executable: row.executable,
                  arguments: (try? decoder.decode([String].self, from: Data(row.arguments.utf8))) ?? [],
                  environment: (try? decoder.decode([String].self, from: Data(row.environment.utf8))) ?? [],
                  createdAt: row.createdAt)
    }

    var row: EngineImageRow {
        EngineImageRow(name: name, rootfs: rootfs, executable: executable, arguments: jsonText(arguments),
                       environment: jsonText(environment), createdAt: createdAt)
    }
}

extension ParentPolicy {
    init?(row: ParentPolicyRow) {
        guard let forkPoint = ForkPointName(rawValue: row.forkPoint) else { return nil }
        self.init(image: row.image, forkPoint: forkPoint, memoryMiB: row.memoryMiB, parents: row.parents, readyVMs: row.readyVMs)
    }

    func row(createdAt: Double) -> ParentPolicyRow {
        ParentPolicyRow(id: id, image: image, forkPoint: forkPoint.rawValue, memoryMiB: memoryMiB, parents: parents,
                        readyVMs: readyVMs, createdAt: createdAt)
    }
}

extension ContainerRow {
    init(info: ContainerInfo) {
        self.init(id: info.id, name: info.name, image: info.image, state: info.state.rawValue, exitCode: info.exitCode,
                  spec: jsonText(info), createdAt: info.createdAt, startedAt: info.startedAt, finishedAt: info.finishedAt)
    }
}

/// Compact JSON of a value, sorted keys ("" if it cannot be encoded).
func jsonText<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? ""
}
