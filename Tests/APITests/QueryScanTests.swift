@testable import API
import Testing

/// The request's query parameters as the routes read them (`Request.queryValue`): the first
/// value of a name, undecoded, a name without `=` having the empty value.
@Suite struct QueryScanTests {
    @Test func theFirstValueOfANameIsFound() {
        let target = "/v1/containers/run?remove=true&label=a=b&label=c&flag&empty=&removed=false"
        #expect(QueryScan.value(of: "remove", in: target) == "true")
        #expect(QueryScan.value(of: "label", in: target) == "a=b", "the first of two, split at its first =")
        #expect(QueryScan.value(of: "flag", in: target) == "")
        #expect(QueryScan.value(of: "empty", in: target) == "")
        #expect(QueryScan.value(of: "removed", in: target) == "false")
        #expect(QueryScan.value(of: "rem", in: target) == nil, "a name is matched whole, not as a prefix")
        #expect(QueryScan.value(of: "run", in: target) == nil, "the path is not the query")
        #expect(QueryScan.value(of: "remove", in: "/v1/containers/run") == nil)
        #expect(QueryScan.value(of: "remove", in: "/v1/containers/run?") == nil)
        #expect(QueryScan.value(of: "remove", in: "/x?&&remove=1&") == "1")
        #expect(QueryScan.value(of: "q", in: "/x?q=a?b") == "a?b", "only the first ? starts the query")
    }
}
