// libFuzzer target: `baio dd`'s operand parser (DDOperands(parsing:), compiled in from Sources/baio by
// scripts/fuzz). The input is the operand list, one operand per line. Any input must either be rejected
// with a DDUsageError or give a plan that holds together; a trap (overflow, bad unwrap, out-of-range
// index) is a finding, and so is a plan that breaks an invariant checked below.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDDOperands(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let operands = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard let plan = try? DDOperands(parsing: operands) else { return 0 }
    // GNU's plan: positive block sizes, offsets and counts not negative.
    precondition(plan.inputBlockSize > 0 && plan.outputBlockSize > 0, "block sizes \(plan.inputBlockSize)/\(plan.outputBlockSize)")
    precondition(plan.skipRecords >= 0 && plan.skipBytes >= 0 && plan.seekRecords >= 0 && plan.seekBytes >= 0, "negative skip/seek")
    precondition(plan.maxRecords >= 0 && plan.maxBytes >= 0, "negative count")
    // Parsing is a function of the operands: the same list gives the same plan.
    let again = try? DDOperands(parsing: operands)
    precondition(again.map { "\($0)" } == "\(plan)", "parsing twice gave two plans")
    return 0
}
