package jet

// ParseAck is parseAck for the package's external tests.
var ParseAck = parseAck
