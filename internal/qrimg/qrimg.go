// Package qrimg draws QR codes as PNG data: URIs, for pages that must show
// one without loading anything from elsewhere: the gateway's "open in
// WeChat" page and the simulator's QR login page.
package qrimg

import (
	"encoding/base64"
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// MaxContent bounds what a QR code carries. Level M holds at most 2331
// bytes; past a few hundred the modules get too small for a phone to read
// off a screen at the sizes the pages use.
const MaxContent = 2331

// PNG encodes content as a QR code of size pixels square (a quiet zone
// included), with medium error correction.
func PNG(content string, size int) ([]byte, error) {
	if len(content) > MaxContent {
		return nil, fmt.Errorf("qr code: %d bytes, over the %d a code holds", len(content), MaxContent)
	}
	b, err := qrcode.Encode(content, qrcode.Medium, size)
	if err != nil {
		return nil, fmt.Errorf("qr code: %w", err)
	}
	return b, nil
}

// DataURI is PNG as a data: URI, for an <img src>.
func DataURI(content string, size int) (string, error) {
	b, err := PNG(content, size)
	if err != nil {
		return "", err
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b), nil
}
