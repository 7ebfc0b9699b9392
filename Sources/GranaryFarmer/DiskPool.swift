import NIOPosix

/// Threads for the farmer's blocking disk work: piece writes, fsyncs, the
/// rename + directory fsync + index commit of a finished piece.
///
/// Its own pool rather than `NIOThreadPool.singleton` (one thread per core,
/// two here): an fsync of a 16 MiB piece or a commit waiting for the
/// journal holds its thread for milliseconds, and with eight uploads the
/// other streams' writes queued behind those waits. Eight threads let the
/// fsyncs of concurrent uploads overlap while writes go on. Started once
/// per process and never stopped (like the singleton).
enum DiskPool {
    static let shared: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 8)
        pool.start()
        return pool
    }()
}
