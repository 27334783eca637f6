package qrimg

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	_ "image/png"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	gozxingqr "github.com/makiuchi-d/gozxing/qrcode"
)

// decode reads a code as a scanner would, finding it by its finder
// patterns. gozxing's detector misreads codes of version 15 and up (over
// about 360 bytes) from any encoder; those it reads as a pure barcode,
// which still checks every module, the format and the error correction.
func decode(t *testing.T, b []byte, pure bool) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an image: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	var hints map[gozxing.DecodeHintType]any
	if pure {
		hints = map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true}
	}
	res, err := gozxingqr.NewQRCodeReader().Decode(bmp, hints)
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
		uri, err := DataURI(want, 240)
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
		if got := decode(t, b, len(want) > 300); got != want {
			t.Errorf("decoded %q, want %q", got, want)
		}
	}
}

func TestTooLong(t *testing.T) {
	if _, err := PNG(strings.Repeat("a", MaxContent+1), 240); err == nil {
		t.Error("content over what a code holds: no error")
	}
}

// TestManyURLsDecode: URLs of every length up to a long return URL, and
// many different ones of one length (the data, through the mask, decides
// whether a detector is misled), decode at the scales the pages use.
func TestManyURLsDecode(t *testing.T) {
	var urls []string
	for n := 0; n < 1200; n += 7 {
		urls = append(urls, "http://127.0.0.1:41234/orders?id="+strings.Repeat("x", n))
	}
	for i := 0; i < 200; i++ {
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/connect/qrconnect?appid=wx0123&state=%x", 30000+i*97, uint64(i)*0x9e3779b97f4a7c15))
	}
	for _, want := range urls {
		for _, width := range []int{0, 120, 240} {
			b, err := PNG(want, width)
			if err != nil {
				t.Fatal(err)
			}
			if got := decode(t, b, len(want) > 300); got != want {
				t.Fatalf("width %d, %d bytes: decoded %q", width, len(want), got)

			}
		}
	}
}
