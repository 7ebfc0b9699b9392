import Foundation

/// Topics describe an offer coarsely so that farmers can subscribe to what
/// their policy accepts: one composite topic per offer naming its size
/// class, duration class and price class, e.g. "offer/size<=16GiB/dur<=30d/price<=1000".
/// A farmer subscribes to every combination its policy accepts (a few dozen
/// strings), and a renter publishes its offer on exactly one.
public enum OfferTopics {
    /// Upper bounds of the size classes, bytes (the last class is open).
    public static let sizeClasses: [UInt64] = [1 << 30, 16 << 30, 256 << 30, 4 << 40]
    /// Upper bounds of the duration classes, seconds.
    public static let durationClasses: [UInt64] = [86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400, 365 * 86_400]
    /// Upper bounds of the price classes (price per audit, smallest units).
    public static let priceClasses: [UInt64] = [10, 100, 1_000, 10_000, 100_000]

    static func classIndex(_ value: UInt64, _ bounds: [UInt64]) -> Int {
        bounds.firstIndex { value <= $0 } ?? bounds.count
    }

    static func label(_ index: Int, _ bounds: [UInt64], _ format: (UInt64) -> String) -> String {
        index < bounds.count ? "<=\(format(bounds[index]))" : ">\(format(bounds[bounds.count - 1]))"
    }

    static func sizeText(_ v: UInt64) -> String { v >= 1 << 40 ? "\(v >> 40)TiB" : "\(v >> 30)GiB" }
    static func durationText(_ v: UInt64) -> String { "\(v / 86_400)d" }

    static func topic(size: Int, duration: Int, price: Int) -> String {
        "offer/size" + label(size, sizeClasses, sizeText) + "/dur" + label(duration, durationClasses, durationText)
            + "/price" + label(price, priceClasses) { "\($0)" }
    }

    /// The topic an offer with these terms is published on.
    public static func topic(allowanceBytes: UInt64, durationSeconds: UInt64, maxPricePerAudit: UInt64) -> String {
        topic(size: classIndex(allowanceBytes, sizeClasses),
              duration: classIndex(durationSeconds, durationClasses),
              price: classIndex(maxPricePerAudit, priceClasses))
    }

    /// Every topic whose offers can satisfy a farmer with this policy: sizes
    /// whose class could fit in `capacityBytes`, durations up to
    /// `maxDurationSeconds`, prices whose class may reach `minPricePerAudit`.
    public static func topics(capacityBytes: UInt64, maxDurationSeconds: UInt64, minPricePerAudit: UInt64) -> [String] {
        // A class is acceptable when some offer in it could be: its lower
        // bound must not exceed the policy (sizes, durations) / its upper
        // bound must reach the minimum price.
        func lowerBound(_ i: Int, _ bounds: [UInt64]) -> UInt64 { i == 0 ? 0 : bounds[i - 1] + 1 }
        let sizes = (0...sizeClasses.count).filter { lowerBound($0, sizeClasses) <= capacityBytes }
        let durations = (0...durationClasses.count).filter { lowerBound($0, durationClasses) <= maxDurationSeconds }
        let prices = (0...priceClasses.count).filter { $0 == priceClasses.count || priceClasses[$0] >= minPricePerAudit }
        var out: [String] = []
        for s in sizes { for d in durations { for p in prices { out.append(topic(size: s, duration: d, price: p)) } } }
        return out
    }
}
