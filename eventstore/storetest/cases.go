package storetest

func init() {
	cases = append(cases,
		testCase{"AppendRoundTrip", testAppendRoundTrip},
		testCase{"AppendValidation", testAppendValidation},
		testCase{"ExpectedVersion", testExpectedVersion},
		testCase{"IdempotentRetry", testIdempotentRetry},
		testCase{"IDConflict", testIDConflict},
		testCase{"AppendCanceledContext", testAppendCanceled},
		testCase{"ReadAllFilters", testReadAllFilters},
		testCase{"ReadAllPaging", testReadAllPaging},
		testCase{"ReadStream", testReadStream},
		testCase{"EventByID", testEventByID},
		testCase{"Wait", testWait},
		testCase{"PositionAt", testPositionAt},
		testCase{"Reopen", testReopen},
		testCase{"Closed", testClosed},
		testCase{"CloseRacingAppends", testCloseRacing},
		testCase{"CommitOrder", testCommitOrder},
		testCase{"CommitOrderRollback", testCommitOrderRollback},
		testCase{"ConcurrentWritersTailingReader", testConcurrentWriters},
	)
}
