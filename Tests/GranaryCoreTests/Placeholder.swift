import Testing
@Test func coreBuilds() {}
