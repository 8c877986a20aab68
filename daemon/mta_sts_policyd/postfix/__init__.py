"""The Postfix side: socketmap netstrings and policy replies (pure), the socketmap server,
its connections and a blocking client.

Imports: `sts`, `net`, `errors`. Never `policy` or `service`: the server is handed an answer
function.
"""
