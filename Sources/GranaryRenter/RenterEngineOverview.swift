// The renter engine (GranaryRenter): segments <-> pieces on farmers.
//
// Decisions, in one place (each is also documented where it is made):
//
// - Upload (NetworkSegmentStore.put): a segment is coded k/r/s/n
//   (systematic: pieces 0..<k are its contiguous slices), each piece goes
//   to a distinct farmer ranked by reputation x uptime / latency x free
//   allowance, with a random factor for spread. All n start at once; the
//   put returns when s are confirmed (root checked and fsynced by the
//   farmer) and cancels the rest. Exactly s pieces are kept: a piece of the
//   long tail that landed anyway is released, so every fresh segment is in
//   the same, known state (s pieces) and the repair threshold r means the
//   same thing for all of them. A farmer that fails or passes its deadline
//   (base + size at a minimum rate) is replaced by a spare for that piece.
//   The segment row turns `durable` in the same transaction that counts s
//   stored pieces, never before.
// - Crash: a segment still `uploading` at start is rolled back (its pieces
//   released); the Store puts it again, as DESIGN.md's orphan rule expects.
// - Read: a range inside data pieces on healthy farmers is fetched from
//   those pieces only (no decoding, no extra bandwidth); if they have not
//   all answered within a hedge delay, or one fails, the read widens to the
//   k best pieces plus one spare request and decodes. Every range is
//   checked against its piece root with the farmer's Merkle range proof
//   (TransferClient.readRange) before use.
// - Audits: per contract, every audit interval x U(0.75, 1.25); a random
//   stored piece and a random leaf; pass pays the contract's price with a
//   cumulative voucher, failure or timeout pays nothing; every audit and
//   voucher is a row in network.db. Clock and randomness are injected.
// - Reputation: audit beta with forgetting (lambda 0.95, new farmers at
//   alpha 1, beta 0, disqualified below 0.6, as Storj v3), an uptime beta of
//   the same form over contact attempts, a latency moving average.
// - Repair: fewer than r healthy pieces, or fewer than s when a piece sits
//   on a disqualified farmer or a dead contract (those never come back),
//   rebuilds up to s pieces from any k onto farmers holding none of the
//   segment, one segment at a time, under a byte-rate limit.
// - Contracts: formed through the DHT market (offer, bids collected for a
//   window and ranked, proposal over TCP, countersigned); the pool keeps
//   `targetContracts` farmers with free allowance, renews when a quarter
//   of a contract's term remains, releases contracts of disqualified
//   farmers. DirectContractSource proposes to known addresses instead.
