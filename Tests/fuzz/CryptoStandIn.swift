// Stands in for swift-crypto when SIPWire is compiled for fuzzing (scripts/fuzz.sh): the
// parsers never compute a digest, and the fuzz build then needs no package dependencies.
public enum Insecure {
    public enum MD5 {
        public static func hash(data: [UInt8]) -> [UInt8] { Array(data.prefix(16)) }
    }
}

public enum SHA256 {
    public static func hash(data: [UInt8]) -> [UInt8] { Array(data.prefix(32)) }
}
