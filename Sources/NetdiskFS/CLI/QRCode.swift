import CQRencode

/// Draws a QR code for the terminal with half-block characters (two module rows per text line).
///
/// Light modules are drawn filled, so the code reads correctly on the usual dark terminal background.
public enum QRCodeRenderer {
    public static func render(_ text: String) -> String? {
        guard let code = QRcode_encodeString(text, 0, QR_ECLEVEL_L, QR_MODE_8, 1) else { return nil }
        defer { QRcode_free(code) }
        let width = Int(code.pointee.width)
        let data = code.pointee.data!
        let quiet = 2
        let size = width + 2 * quiet
        func dark(_ row: Int, _ column: Int) -> Bool {
            let r = row - quiet, c = column - quiet
            guard r >= 0, r < width, c >= 0, c < width else { return false }
            return data[r * width + c] & 1 != 0
        }
        var out = ""
        var row = 0
        while row < size {
            for column in 0..<size {
                switch (dark(row, column), dark(row + 1, column)) {
                case (false, false): out += "█"
                case (true, true): out += " "
                case (true, false): out += "▄"
                case (false, true): out += "▀"
                }
            }
            out += "\n"
            row += 2
        }
        return out
    }
}
