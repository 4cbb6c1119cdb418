package testenv

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a small command for the Run and
// StartProcess tests instead of running tests.
const helperEnv = "TESTENV_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	code := m.Run()
	RemoveBuildDir()
	os.Exit(code)
}

func helperMain(mode string, args []string) int {
	switch mode {
	case "echo": // print args, an env var and stdin; exit with $HELPER_EXIT
		fmt.Fprintf(os.Stdout, "args=%q\n", args)
		fmt.Fprintf(os.Stdout, "HELPER_VALUE=%s\n", os.Getenv("HELPER_VALUE"))
		in, _ := io.ReadAll(os.Stdin)
		fmt.Fprintf(os.Stdout, "stdin=%q\n", in)
		fmt.Fprintln(os.Stderr, "to stderr")
		code, _ := strconv.Atoi(os.Getenv("HELPER_EXIT"))
		return code
	case "sleep": // run until killed, reporting readiness on stdout
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "fake-dockerd", "fake-dockerd-fail": // see dockerd_script_test.go
		return fakeDockerd(mode, args)
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

func helperBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
