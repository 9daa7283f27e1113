package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Log formats (--log-format).
const (
	logFormatText = "text"
	logFormatJSON = "json"
)

// logFlags are the logging settings of every subcommand that logs: the level
// and the format of the log on stderr.
type logFlags struct {
	Level  slog.Level
	Format string
}

// register adds --log-level (with def as its default) and --log-format.
func (l *logFlags) register(s *settings, def slog.Level) {
	l.Level = def
	s.Var(logLevel{&l.Level}, "log-level", "log level: debug, info, warn or error")
	l.registerFormat(s)
}

// registerFormat adds --log-format alone (send logs nothing but its errors).
func (l *logFlags) registerFormat(s *settings) {
	l.Format = logFormatText
	s.Var(logFormat{&l.Format}, "log-format",
		"format of the log on stderr: text (key=value lines) or json (one JSON object per line, for log collectors)")
}

// logFormat is the --log-format setting: text or json.
type logFormat struct{ p *string }

func (v logFormat) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v logFormat) Set(s string) error {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case logFormatText, logFormatJSON:
		*v.p = f
		return nil
	}
	return fmt.Errorf("want text or json")
}

// newLogger returns the logger of a subcommand: slog's TextHandler or
// JSONHandler on w, at the level of l.
func newLogger(w io.Writer, l logFlags) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.Level}
	if l.Format == logFormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logger returns the subcommand's logger on c.stderr and, with the json
// format, makes c report a runtime failure (fail) as one JSON log record
// instead of a line of text, so that a log collector parses every line.
func (c *cli) logger(l logFlags) *slog.Logger {
	log := newLogger(c.stderr, l)
	if l.Format == logFormatJSON {
		c.jsonLog = log
	} else {
		c.jsonLog = nil
	}
	return log
}
