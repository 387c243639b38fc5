mod handler;
mod pump;
mod sink;
mod template;
