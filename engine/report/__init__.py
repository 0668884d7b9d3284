"""`slotlab report`: a session log as a mail-ready text, Markdown or one html file."""
