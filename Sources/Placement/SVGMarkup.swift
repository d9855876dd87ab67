import Foundation

/// The SVG text the reports' charts are written in (the capacity report's and the load
/// report's): numbers with one decimal, escaped text, and labels in one font.
public enum SVGMarkup {
    public static let font = "DejaVu Sans, Helvetica, Arial, sans-serif"

    /// A coordinate or length, to a tenth.
    public static func number(_ value: Double) -> String { String(format: "%.1f", value) }

    /// Text made safe inside an element or attribute.
    public static func escape(_ raw: String) -> String {
        raw.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// A `<text>` label at (x, y).
    public static func text(_ x: Double, _ y: Double, _ content: String, size: Int, weight: String = "400", color: String = "#111827",
                            anchor: String = "start") -> String {
        "<text x=\"\(number(x))\" y=\"\(number(y))\" font-size=\"\(size)\" font-weight=\"\(weight)\" fill=\"\(color)\" text-anchor=\"\(anchor)\" font-family=\"\(font)\">\(escape(content))</text>"
    }
}
