package qrimg

import (
	"bytes"
	"encoding/base64"
	"image"
	_ "image/png"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	gozxingqr "github.com/makiuchi-d/gozxing/qrcode"
)

func decode(t *testing.T, b []byte) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an image: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := gozxingqr.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("decoding the QR code: %v", err)
	}
	return res.GetText()
}

// TestDataURIDecodes: what a scanner reads is the content, byte for byte,
// including a URL with a query and non-ASCII.
func TestDataURIDecodes(t *testing.T) {
	for _, want := range []string{
		"http://localhost:8080/orders?id=7&x=%E5%BE%AE",
		"https://good.example.com/" + strings.Repeat("a", 1000),
		"https://例子.example/路径",
	} {
		uri, err := DataURI(want, 256)
		if err != nil {
			t.Fatal(err)
		}
		b64, ok := strings.CutPrefix(uri, "data:image/png;base64,")
		if !ok {
			t.Fatalf("DataURI = %.40q, want a PNG data: URI", uri)
		}
		b, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, b); got != want {
			t.Errorf("decoded %q, want %q", got, want)
		}
	}
}

func TestTooLong(t *testing.T) {
	if _, err := PNG(strings.Repeat("a", MaxContent+1), 256); err == nil {
		t.Error("content over what a code holds: no error")
	}
}
