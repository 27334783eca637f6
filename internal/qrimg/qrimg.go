// Package qrimg draws QR codes as PNG data: URIs, for pages that must show
// one without loading anything from elsewhere: the gateway's "open in
// WeChat" page and the simulator's QR login page.
package qrimg

import (
	"encoding/base64"
	"fmt"

	"rsc.io/qr"
)

// MaxContent bounds what a QR code carries: level M holds at most 2331
// bytes.
const MaxContent = 2331

// PNG encodes content as a QR code with medium error correction, in a
// quiet zone of four modules, at most about width pixels wide: whole
// pixels per module (at least two), so that neither a scanner nor a
// screen sees blurred edges.
func PNG(content string, width int) ([]byte, error) {
	if len(content) > MaxContent {
		return nil, fmt.Errorf("qr code: %d bytes, over the %d a code holds", len(content), MaxContent)
	}
	c, err := qr.Encode(content, qr.M)
	if err != nil {
		return nil, fmt.Errorf("qr code: %w", err)
	}
	c.Scale = max(width/(c.Size+8), 2)
	return c.PNG(), nil
}

// DataURI is PNG as a data: URI, for an <img src>.
func DataURI(content string, width int) (string, error) {
	b, err := PNG(content, width)
	if err != nil {
		return "", err
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b), nil
}
