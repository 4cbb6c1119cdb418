// Command hello is the tiny web app berth's examples and end-to-end tests
// run: built statically and shipped in an image FROM scratch. It answers /
// with $MESSAGE and /healthz with 200, or 500 when $UNHEALTHY is set.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		// Used as the container healthcheck: no shell or curl in the image.
		resp, err := http.Get("http://127.0.0.1:" + port() + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			os.Exit(1)
		}
		return
	}
	msg := os.Getenv("MESSAGE")
	if msg == "" {
		msg = "hello from berth"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, msg) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if os.Getenv("UNHEALTHY") != "" {
			http.Error(w, "unhealthy", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: ":" + port(), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("hello listening on %s", srv.Addr)
	log.Fatal(srv.ListenAndServe())
}

func port() string {
	if p := os.Getenv("PORT"); p != "" {
		return p
	}
	return "8080"
}
