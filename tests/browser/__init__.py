"""Browser tests: the demo page and streamgate.js in headless Chromium, and the client's unit tests under node."""
