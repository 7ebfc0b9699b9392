import GRDB

extension Database {
    /// Runs one statement through the connection's statement cache. The
    /// hot statements (inode, entry, chunk, xattr and blob rows) then are
    /// parsed once per connection instead of on every call, which was a
    /// visible share of a small-file copy's CPU time.
    @inline(__always)
    func run(_ sql: String, _ arguments: StatementArguments) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}
