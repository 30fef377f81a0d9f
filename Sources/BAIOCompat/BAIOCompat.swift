// This file will own libbaio, the libaio-compatible drop-in (issue 6).
