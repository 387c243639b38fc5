mod handler;
mod sink;
mod template;
