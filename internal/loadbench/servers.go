package main

import (
	"log"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/proxy"
	"github.com/valyala/fasthttp"
)

// originBody is what the origin answers: about the size of a small JSON
// API answer.
var originBody = []byte(`{"ok":true,"items":[1,2,3,4,5,6,7,8],"note":"a small JSON answer"}` + "\n")

// origin serves every request with originBody.
func origin(addr string) {
	s := &fasthttp.Server{
		Handler: func(c *fasthttp.RequestCtx) {
			c.SetContentType("application/json")
			c.SetBody(originBody)
		},
		NoDefaultServerHeader: true,
	}
	log.Fatal(s.ListenAndServe(addr))
}

// baseline is the bare fiber reverse proxy wxgate is measured against.
func baseline(addr, upstream string) {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(proxy.Balancer(proxy.Config{Servers: []string{"http://" + upstream}}))
	log.Fatal(app.Listen(addr))
}
