import Foundation

extension Thread {
    /// Starts `body` on a new thread named `name` as the kernel shows it (`top -H`, `perf`,
    /// `/proc/<pid>/task/*/comm`). Naming a Foundation `Thread` does not reach the kernel
    /// on Linux and Glibc's `pthread_setname_np` is not visible to Swift, so the thread
    /// writes its own `/proc/thread-self/comm` (which keeps at most 15 bytes).
    public static func startNamed(_ name: String, _ body: @escaping @Sendable () -> Void) {
        Thread {
            kernelName = name
            body()
        }.start()
    }

    /// The calling thread's name as the kernel knows it (see ``startNamed(_:_:)``).
    public static var kernelName: String {
        get {
            guard let data = FileManager.default.contents(atPath: "/proc/thread-self/comm") else { return "" }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
        }
        set {
            let fd = open("/proc/thread-self/comm", O_WRONLY)
            guard fd >= 0 else { return }
            defer { close(fd) }
            let bytes = Array(newValue.utf8.prefix(15))
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }
}
