#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, with AddressSanitizer) of the parsers that read what
# clients send: XMPPWire's XML stream reader, SIPWire's parser and header parsers, and the
# line protocol's command parser. Each target is compiled out of tree with swiftc from the
# module's own sources plus a harness in Tests/fuzz/, then run for FUZZ_SECONDS (default 60)
# from the seeds (Tests/fuzz/seeds/, and the RFC 4475 messages for SIP).
#
#   scripts/fuzz.sh [xml|sip|line ...]        (make fuzz runs all three)
#
# A crash, a failed precondition or a leak stops the run: the input that did it is kept as
# .build/fuzz/<target>/crash-* and the script exits non-zero. The corpus grows under
# .build/fuzz/<target>/corpus and is reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
ROOT="$PWD"
OUT="$ROOT/.build/fuzz"
# -package-name: the modules share `package` declarations, as they do in the SwiftPM build.
FLAGS=(-parse-as-library -O -sanitize=fuzzer,address -package-name switchboard)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(xml sip line)

module() { # name, output dir, sources...
    local name="$1" dir="$2"; shift 2
    swiftc "${FLAGS[@]}" -emit-module -emit-library -static -module-name "$name" -I "$dir" \
        -Xcc -I/usr/include/libxml2 -I "$ROOT/Sources/CLibXML2" \
        -emit-module-path "$dir/$name.swiftmodule" -o "$dir/lib$name.a" "$@"
}

build() { # target -> .build/fuzz/<target>/fuzz
    local t="$1" dir="$OUT/$1"
    mkdir -p "$dir/corpus"
    case "$t" in
        xml)
            module XMPPWire "$dir" "$ROOT"/Sources/XMPPWire/*.swift
            swiftc "${FLAGS[@]}" -I "$dir" -I "$ROOT/Sources/CLibXML2" -Xcc -I/usr/include/libxml2 \
                "$ROOT/Tests/fuzz/XMLStreamReaderFuzz.swift" "$dir/libXMPPWire.a" -lxml2 -o "$dir/fuzz"
            cp -n "$ROOT"/Tests/fuzz/seeds/xml/* "$dir/corpus/" ;;
        sip)
            swiftc -parse-as-library -O -emit-module -emit-library -static -module-name Crypto \
                -emit-module-path "$dir/Crypto.swiftmodule" -o "$dir/libCrypto.a" "$ROOT/Tests/fuzz/CryptoStandIn.swift"
            module SIPWire "$dir" "$ROOT"/Sources/SIPWire/*.swift
            swiftc "${FLAGS[@]}" -I "$dir" "$ROOT/Tests/fuzz/SIPParserFuzz.swift" "$dir/libSIPWire.a" "$dir/libCrypto.a" -o "$dir/fuzz"
            cp -n "$ROOT"/Tests/SIPWireTests/Fixtures/rfc4475/*.dat "$dir/corpus/" ;;
        line)
            # The files of LineWire that need no SwiftNIO (the framing decoder is tested by unit tests).
            module LineWire "$dir" "$ROOT"/Sources/LineWire/{LineCommand,LineCommandParser,LineParseError,LineText,ASCIIBytes}.swift
            swiftc "${FLAGS[@]}" -I "$dir" "$ROOT/Tests/fuzz/LineCommandFuzz.swift" "$dir/libLineWire.a" -o "$dir/fuzz"
            cp -n "$ROOT"/Tests/fuzz/seeds/line/* "$dir/corpus/" ;;
        *) echo "unknown fuzz target: $t (xml, sip, line)" >&2; exit 2 ;;
    esac
}

status=0
for t in "${targets[@]}"; do
    echo "fuzz: building $t"
    build "$t" 2> >(grep -v "Cannot export local symbol" >&2)
    echo "fuzz: running $t for ${SECONDS_PER_TARGET}s"
    dir="$OUT/$t"
    if ! (cd "$dir" && ./fuzz -max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 corpus > fuzz.log 2>&1); then
        echo "fuzz: $t FAILED; see $dir/fuzz.log and $dir/crash-*" >&2
        tail -30 "$dir/fuzz.log" >&2
        status=1
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$dir/fuzz.log" | sed "s/^/fuzz: $t /"
    fi
done
exit $status
